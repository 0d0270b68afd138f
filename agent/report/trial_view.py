"""One trial whole (`openrl-agent report --trial ID`): spec, rationale, curves as sparklines, samples of
wrong SQL with their verdicts, and lineage (the trial it started from, the trials started from it).

The leaderboard shortens all of this to fit a line; here nothing is cut except the number of samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.report import format as fmt
from agent.report.facts import leaderboard
from agent.report.files import load_trial
from rl_core.sessiondir import trial_dir
from rl_core.trialdir import SAMPLES_FILE
from tools.trials import read_jsonl

CURVES = ("reward_mean", "batch_accuracy", "kl", "entropy", "grad_norm", "completion_len")
WRONG_SHOWN = 6


class TrialNotFound(LookupError):
    """No such trial in the session; the message lists the ones there are."""


def trial_facts(session_dir: Path, trial_id: str) -> dict[str, Any]:
    rows = {r["trial_id"]: r for r in leaderboard(session_dir)}
    tdir = trial_dir(session_dir, trial_id)
    if trial_id not in rows and not tdir.is_dir():
        known = ", ".join(sorted(rows)) or "none yet"
        raise TrialNotFound(f"no trial {trial_id!r} in session {Path(session_dir).name}; its trials: {known}")
    row = rows.get(trial_id) or {"trial_id": trial_id}
    trial = load_trial(tdir)
    samples = read_jsonl(tdir / SAMPLES_FILE)
    wrong = [s for s in samples if not s.get("correct")]
    return {
        "trial_id": trial_id,
        "row": row,
        "spec": trial.spec,
        "result": trial.result,
        "curves": {k: [m.get(k) for m in trial.metrics] for k in CURVES if any(k in m for m in trial.metrics)},
        "evals": trial.evals,
        "samples": {"n": len(samples), "wrong": len(wrong), "shown": wrong[-WRONG_SHOWN:]},
        "lineage": _lineage(trial_id, rows),
    }


def _parent(row: dict[str, Any] | None) -> str | None:
    return (row or {}).get("parent")


def _lineage(trial_id: str, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ancestors, seen, current = [], {trial_id}, _parent(rows.get(trial_id))
    while current and current not in seen:
        ancestors.append(current)
        seen.add(current)
        current = _parent(rows.get(current))
    children = sorted(tid for tid, r in rows.items() if _parent(r) == trial_id)
    return {"ancestors": ancestors, "children": children}


def trial_renderable(facts: dict[str, Any]) -> RenderableType:
    row, spec = facts["row"], facts["spec"]
    status = row.get("status") or (facts["result"] or {}).get("status") or "running"
    lines = [
        f"[bold]{facts['trial_id']}[/]  {status}   round {row.get('round', '-')}   planner {row.get('planner', '-')}",
        f"dev accuracy {fmt.pct(row.get('accuracy'))} (Δ {fmt.change(row.get('gain'), row.get('gain_stderr'))} "
        f"points)   steps {fmt.steps(row.get('steps'), row.get('max_steps'))}   wall {fmt.duration(row.get('wall_s'))}",
    ]
    error = row.get("error") or (facts["result"] or {}).get("error")
    if error:
        lines.append(f"[red]{error.get('kind')}[/]: {error.get('message', '')}")
    lineage = facts["lineage"]
    chain = " ← ".join([facts["trial_id"], *lineage["ancestors"]]) if lineage["ancestors"] else "from the base policy"
    lines.append(f"lineage: {chain}" + (f"   started from it: {', '.join(lineage['children'])}"
                                        if lineage["children"] else ""))
    parts: list[RenderableType] = [Panel("\n".join(lines), title=f"Trial {facts['trial_id']}", title_align="left")]
    parts.append(Text.assemble(("rationale: ", "bold"), row.get("rationale") or "-"))
    parts.append(_spec_table(spec))
    parts.append(_curves_table(facts))
    parts.append(_samples_table(facts["samples"]))
    return Group(*parts)


def _spec_table(spec: dict[str, Any]) -> Table:
    table = Table(title="Spec", title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key in ("model", "dataset", "train_split", "seed", "device"):
        if key in spec:
            table.add_row(key, fmt.value(spec[key]))
    reward = spec.get("reward") or {}
    table.add_row("reward", fmt.reward(reward.get("components") or {}) +
                  (f" {fmt.kv(reward['params'])}" if reward.get("params") else ""))
    for key in ("hparams", "budget", "eval"):
        if isinstance(spec.get(key), dict):
            table.add_row(key, fmt.kv(spec[key]))
    return table


def _curves_table(facts: dict[str, Any]) -> RenderableType:
    if not facts["curves"] and not facts["evals"]:
        return Text("Curves: no step logged yet.", style="dim")
    table = Table(title="Curves per step", title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(no_wrap=True, overflow="ellipsis")
    for name, values in facts["curves"].items():
        table.add_row(name, fmt.curve_line(values))
    table.add_row("dev accuracy (evals)", fmt.eval_path(facts["evals"]))
    return table


def _samples_table(samples: dict[str, Any]) -> RenderableType:
    if not samples["shown"]:
        return Text(f"Samples: {samples['n']} logged, none wrong.", style="dim")
    table = Table(title=f"Wrong SQL (latest {len(samples['shown'])} of {samples['wrong']} wrong, "
                        f"{samples['n']} samples)", title_justify="left", show_lines=True)
    table.add_column("step", justify="right", no_wrap=True)
    table.add_column("question", overflow="fold", ratio=2)
    table.add_column("sql", overflow="fold", ratio=3)
    table.add_column("verdict", overflow="fold", ratio=1)
    for s in samples["shown"]:
        verdict = str(s.get("status") or "wrong") + (f": {s['error']}" if s.get("error") else "")
        table.add_row(str(s.get("step", "")), str(s.get("question", "")), str(s.get("sql") or s.get("completion", "")),
                      Text(verdict, style="red"))
    return table
