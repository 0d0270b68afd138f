"""Formatting shared by the terminal and markdown forms, so both print the same numbers the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BLOCKS = "▁▂▃▄▅▆▇█"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def change(gain: float | None, stderr: float | None) -> str:
    """A change in percentage points with its standard error, e.g. `+4.5 ± 2.1`."""
    if gain is None:
        return "-"
    return f"{100 * gain:+.1f}" if stderr is None else f"{100 * gain:+.1f} ± {100 * stderr:.1f}"


def is_signal(gain: float | None, stderr: float | None) -> bool:
    return gain is not None and stderr is not None and gain > stderr


def value(v: Any) -> str:
    """Numbers to 3 significant digits; small ones as `1.3e-4` (learning rates)."""
    if isinstance(v, float):
        if 0 < abs(v) < 1e-2:
            mantissa, exp = f"{v:.1e}".split("e")
            return f"{mantissa.removesuffix('.0')}e{int(exp)}"
        return f"{v:.3g}"
    return "-" if v is None else str(v)


_SHORT_REWARD = {"execution_match": "exec", "partial_credit": "partial", "length_penalty": "length",
                 "schema_link": "schema"}  # fmt: skip


def reward(components: dict[str, Any] | str) -> str:
    """`exec 1 + format 0.17`: the reward spec's components and weights in one short line."""
    if isinstance(components, str):
        return components
    parts = [f"{_SHORT_REWARD.get(name, name)} {float(w):.2g}" for name, w in components.items() if w]
    return " + ".join(parts) or "-"


def kv(d: dict[str, Any]) -> str:
    return " ".join(f"{k}={value(v)}" for k, v in d.items())


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def params(p: dict[str, Any]) -> str:
    return " ".join(f"{short_name(k)}={value(v)}" for k, v in p.items())


_SHORT = {
    "learning_rate": "lr",
    "lora_rank": "rank",
    "temperature": "temp",
    "group_size": "G",
    "prompts_per_step": "prompts",
    "kl_beta": "kl",
    "loss_type": "loss",
}


def short_name(name: str) -> str:
    return _SHORT.get(name, name)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def steps(done: int | None, total: int | None) -> str:
    if done is None:
        return "-"
    return f"{done}/{total}" if total else str(done)


def sparkline(values: list[float | None], width: int = 24) -> str:
    """Unicode block sparkline; long series are averaged into `width` buckets so trends stay visible."""
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    if len(vals) > width:
        size = len(vals) / width
        vals = [
            sum(b) / len(b) for b in (vals[int(i * size) : int((i + 1) * size)] for i in range(width)) if b
        ]
    lo, hi = min(vals), max(vals)
    span = hi - lo
    return "".join(BLOCKS[int((v - lo) / span * (len(BLOCKS) - 1)) if span else 3] for v in vals)


def curve_line(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    return f"{sparkline(vals)} {vals[0]:.2f}→{vals[-1]:.2f}"


def eval_path(evals: list[dict]) -> str:
    accs = [e["accuracy"] for e in evals if e.get("accuracy") is not None]
    return " → ".join(f"{100 * a:.1f}" for a in accs) if accs else "-"


_METRICS = {
    "dev_accuracy_after": "dev execution accuracy",
    "gain": "gain in dev execution accuracy over the base policy",
}


def objective(session: dict[str, Any]) -> str:
    text = f"maximise {_METRICS.get(session['objective'], session['objective'])}"
    if session.get("target") is not None:
        text += f", stop at {pct(session['target'])}"
    if session.get("budget_minutes"):
        text += f", budget {value(session['budget_minutes'])} min"
    return text


def state(session: dict[str, Any]) -> str:
    reason = session.get("stop_reason")
    return session["state"] + (f" ({reason})" if reason and reason != session["state"] else "")


def round_notes(r: dict[str, Any]) -> str:
    notes = ([f"fallback: {r['fallback']}"] if r.get("fallback") else []) + list(r.get("notes") or [])
    return "; ".join(notes)


def status(row: dict[str, Any]) -> str:
    if row["status"] == "pruned" and row.get("pruned_at_step") is not None:
        return f"pruned@{row['pruned_at_step']}"
    return row["status"]


def base(b: dict[str, Any]) -> str:
    """`40.0% ± 2.4 dev execution accuracy (n=400)`, or the spread when trials start from different policies."""
    n = f" (n={b['n']})" if b.get("n") else ""
    if b.get("low") is not None and b["low"] != b["high"]:
        return (f"{pct(b['low'])} to {pct(b['high'])} dev execution accuracy{n}, depending on the trial's "
                "warm start; each Δ is measured from the trial's own start")  # fmt: skip
    se = f" ± {100 * b['stderr']:.1f}" if b.get("stderr") is not None else ""
    return f"{pct(b['accuracy'])}{se} dev execution accuracy{n}"


def shown_path(path: Path | str) -> str:
    """`runs/...` relative to the working directory when under it (what a user types), else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


TREE_HEADER = ["trial", "from", "dev acc", "Δ parent ± se", "Δ base ± se", "GRPO time", "steps", "screen"]
CONFIRM_HEADER = ["trial", "dev acc", "test acc ± se", "Δ base on test ± se (paired)", "McNemar p", "Holm p",
                  "beats base"]


def _points(value: float | None, se: float | None) -> str:
    return "-" if value is None else change(value, se)


def tree_rows(tree: list[dict[str, Any]]) -> list[list[str]]:
    """The trial tree, a child indented under its parent; changes in points with paired SEs."""
    rows = []
    for node in tree:
        origin = "base" if node["parent"] is None else f"{node['action']} {node['parent']}"
        rows.append(["  " * node["depth"] + ("└ " if node["depth"] else "") + node["trial_id"], origin,
                     pct(node["accuracy"]), _points(node["gain_over_parent"], node["gain_over_parent_se"]),
                     _points(node["gain_over_base"], node["gain_over_base_se"]),
                     duration(node.get("train_s_total")), str(node.get("steps_total") or "-"),
                     screen_text(node.get("screen"))])
    return rows


def screen_text(screen: dict[str, Any] | None) -> str:
    """A challenger's race: where it stood against its incumbent at equal steps, and the verdict."""
    if not screen:
        return ""
    verdict = {"stopped": "stopped", "replaces": "replaced it", "incumbent kept": "kept the incumbent",
               "waiting": "racing"}.get(screen.get("verdict"), screen.get("verdict") or "")
    return (f"vs {screen.get('reference')} at step {screen.get('step')}: "
            f"{change(screen.get('diff') or 0.0, screen.get('se'))} (n={screen.get('n')}), {verdict}")


def confirm_rows(confirm: dict[str, Any]) -> list[list[str]]:
    base = confirm.get("base") or {}
    rows = [["base", "-", f"{pct(base.get('accuracy'))} ± {100 * (base.get('stderr') or 0):.1f}", "-", "-", "-", "-"]]
    for t in confirm.get("trials") or []:
        rows.append([t["trial_id"], pct(t["dev_accuracy"]), f"{pct(t['test_accuracy'])} ± {100 * t['test_stderr']:.1f}",
                     change(t["diff"], t["diff_se"]), f"{t['p_mcnemar']:.3g}", f"{t['p_holm']:.3g}",
                     "yes" if t["beats_base"] else "no"])
    return rows
