"""The report as GitHub-flavoured markdown, for pasting into a pull request or a notebook."""

from __future__ import annotations

import json
from typing import Any

from agent.report import format as fmt


def render_markdown(facts: dict[str, Any]) -> str:
    if not facts["leaderboard"]:
        return _header(facts) + "\n\nNo trials yet.\n"
    parts = [_header(facts), _leaderboard(facts["leaderboard"])]
    if facts["best"]:
        parts.append(_best(facts["best"]))
    if facts.get("confirm") and facts["confirm"].get("trials"):
        parts.append("## Confirmation on the sealed test split\n\n" +
                     _table(fmt.CONFIRM_HEADER, fmt.confirm_rows(facts["confirm"])))
    if facts.get("tree"):
        parts.append("## Trial tree\n\nChanges in points; standard errors are paired (same dev questions).\n\n" +
                     _table(fmt.TREE_HEADER, fmt.tree_rows(facts["tree"])))
    parts += [_rounds(facts["rounds"]), _importances(facts["importances"])]
    if facts["failures"]:
        parts.append(_failures(facts["failures"]))
    if facts["curves"]:
        parts.append(_curves(facts["curves"]))
    return "\n\n".join(parts) + "\n"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _header(facts: dict[str, Any]) -> str:
    s, base = facts["session"], facts["base"]
    counts = ", ".join(f"{n} {k}" for k, n in s["counts"].items() if n) or "none yet"
    lines = [
        f"# openrl-agent report: {s['id']}",
        "",
        f"- State: {fmt.state(s)}",
        f"- Goal: {s['goal']}",
        f"- Model: `{s['model']}`, dataset: `{s['dataset']}`, planner: {s['planner']}, launcher: {s['launcher']}",
        f"- Trials: {counts}" + (f" of {s['trials_planned']}" if s["trials_planned"] else ""),
        f"- Objective: {fmt.objective(s)}",
    ]
    if base:
        lines.append(f"- Base policy: {fmt.base(base)}")
    lines += ["", f"**{facts['verdict']['text']}**"]
    return "\n".join(lines)


def _leaderboard(rows: list[dict[str, Any]]) -> str:
    header = [
        "#",
        "trial",
        "status",
        "dev acc",
        "Δ start ± se (points)",
        "key hparams",
        "reward",
        "steps",
        "wall",
        "rationale",
    ]
    body = [
        [
            r["rank"] or "",
            r["trial_id"],
            fmt.status(r),
            fmt.pct(r["accuracy"]),
            fmt.change(r["gain"], r["gain_stderr"]),
            fmt.params(r["params"]),
            r["reward"],
            fmt.steps(r["steps"], r["max_steps"]),
            fmt.duration(r["wall_s"]),
            r["rationale"] or (r["error"] or {}).get("kind", ""),
        ]
        for r in rows
    ]
    return "## Leaderboard\n\n" + _table(header, body)


def _best(best: dict[str, Any]) -> str:
    adapter = best["adapter_path"] or "(none saved)"
    return "\n".join(
        [
            f"## Best trial {best['trial_id']}",
            "",
            f"Dev accuracy {fmt.pct(best['accuracy'])} (Δ {fmt.change(best['gain'], best['gain_stderr'])} points), "
            f"{best['steps']} steps, {fmt.duration(best['wall_s'])}.",
            "",
            f"Adapter: `{adapter}`",
            "",
            "Reproduce:",
            "",
            "```bash",
            best["reproduce"],
            "```",
            "",
            "Full config:",
            "",
            "```json",
            json.dumps(best["spec"], indent=2, sort_keys=True),
            "```",
        ]
    )


def _rounds(rounds: list[dict[str, Any]]) -> str:
    body = [
        [
            "-" if r["round"] is None else r["round"],
            r["planner"] or "-",
            ", ".join(r["trials"]),
            r["succeeded"],
            r["failed"],
            f"{r['best_trial']} {fmt.pct(r['best_accuracy'])}" if r["best_trial"] else "-",
            fmt.pct(r["mean_accuracy"]),
            fmt.round_notes(r),
        ]
        for r in rounds
    ]
    header = ["round", "planner", "trials", "ok", "failed", "best", "mean", "notes"]
    reasons = [
        f"- {tid} (round {r['round']}): {text}" for r in rounds for tid, text in r["rationales"].items()
    ]
    return (
        "## Rounds\n\n"
        + _table(header, body)
        + ("\n\nPlanner rationale:\n\n" + "\n".join(reasons) if reasons else "")
    )


def _importances(imp: dict[str, Any]) -> str:
    if not imp["params"]:
        return f"## Parameter importances\n\nNone ({imp['note']})."
    body = [[k, f"{v:.2f}"] for k, v in imp["params"].items()]
    return (
        f"## Parameter importances\n\nOptuna PED-ANOVA over {imp['n_trials']} finished trials.\n\n"
        + _table(["parameter", "importance"], body)
    )


def _failures(failures: list[dict[str, Any]]) -> str:
    body = [
        [f["trial_id"], "-" if f["round"] is None else f["round"], f["kind"], f["message"]] for f in failures
    ]
    return "## Failed trials\n\n" + _table(["trial", "round", "error", "message"], body)


def _curves(curves: dict[str, dict[str, Any]]) -> str:
    body = [
        [
            t,
            f"`{fmt.curve_line(c['reward_mean'])}`",
            f"`{fmt.curve_line(c['batch_accuracy'])}`",
            fmt.eval_path(c["eval"]),
        ]
        for t, c in curves.items()
    ]
    return "## Curves per step\n\n" + _table(
        ["trial", "reward", "batch accuracy", "dev accuracy (evals)"], body
    )
