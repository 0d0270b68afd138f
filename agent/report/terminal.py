"""The report as Rich renderables for the terminal (`openrl-agent report`, and the live view's leaderboard)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.report import format as fmt

RATIONALE_CHARS = 64  # the leaderboard shows the start; the Rounds section has every rationale in full
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "running": "cyan",
    "pruned": "yellow",
    "interrupted": "yellow",
    "queued": "dim",
}


def render_terminal(facts: dict[str, Any], console: Console) -> None:
    console.print(header(facts))
    console.print(verdict_text(facts))
    if not facts["leaderboard"]:
        console.print("No trials yet.", style="dim")
        return
    console.print(leaderboard_table(facts["leaderboard"]))
    if facts["best"]:
        console.print(best_panel(facts["best"]))
        # Outside the panel and never wrapped by Rich, so it copies and pastes as one command.
        console.print(
            f"reproduce: {facts['best']['reproduce']}", soft_wrap=True, highlight=False, markup=False
        )
    console.print(_rest(facts))


def report_renderable(facts: dict[str, Any]) -> RenderableType:
    """The whole report as one renderable (for Live and for exporting); the reproduce line may wrap here."""
    parts: list[RenderableType] = [
        header(facts),
        verdict_text(facts),
        leaderboard_table(facts["leaderboard"]),
    ]
    if facts["best"]:
        parts += [best_panel(facts["best"]), Text(f"reproduce: {facts['best']['reproduce']}")]
    parts.append(_rest(facts))
    return Group(*parts)


def _rest(facts: dict[str, Any]) -> RenderableType:
    parts: list[RenderableType] = [rounds_table(facts["rounds"]), importances_text(facts["importances"])]
    if facts["failures"]:
        parts.append(failures_table(facts["failures"]))
    if facts["curves"]:
        parts.append(curves_table(facts["curves"]))
    return Group(*parts)


def header(facts: dict[str, Any]) -> RenderableType:
    s = facts["session"]
    base = facts["base"]
    counts = ", ".join(f"{n} {k}" for k, n in s["counts"].items() if n)
    lines = [
        f"[bold]{s['id']}[/]  [dim]{fmt.state(s)}[/]",
        f"goal: {s['goal']}",
        f"model: {s['model'] or '-'}   dataset: {s['dataset'] or '-'}   planner: {s['planner'] or '-'}"
        f"   launcher: {s['launcher'] or '-'}",
        f"trials: {counts or 'none yet'}" + (f" of {s['trials_planned']}" if s["trials_planned"] else ""),
        f"objective: {fmt.objective(s)}",
    ]
    if base:
        lines.append(f"base policy: {fmt.base(base)}")
    return Panel("\n".join(lines), title="openrl-agent report", title_align="left", expand=False)


def verdict_text(facts: dict[str, Any]) -> Text:
    style = "bold green" if facts["verdict"]["beats_base"] else "bold yellow"
    return Text(facts["verdict"]["text"], style=style)


def leaderboard_table(rows: list[dict[str, Any]], title: str = "Leaderboard") -> Table:
    table = Table(title=title, title_justify="left", expand=False, show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("trial")
    table.add_column("status")
    table.add_column("dev acc", justify="right")
    table.add_column("Δ base ± se", justify="right")
    table.add_column("key hparams")
    table.add_column("reward", overflow="fold")
    table.add_column("steps", justify="right")
    table.add_column("wall", justify="right")
    table.add_column("rationale", max_width=36, overflow="fold")
    for r in rows:
        signal = fmt.is_signal(r["gain"], r["gain_stderr"])
        table.add_row(
            str(r["rank"] or ""),
            r["trial_id"],
            Text(fmt.status(r), style=STATUS_STYLE.get(r["status"], "")),
            fmt.pct(r["accuracy"]),
            Text(fmt.change(r["gain"], r["gain_stderr"]), style="green" if signal else ""),
            fmt.params(r["params"]),
            r["reward"],
            fmt.steps(r["steps"], r["max_steps"]),
            fmt.duration(r["wall_s"]),
            fmt.clip(r["rationale"], RATIONALE_CHARS) or (r["error"] or {}).get("kind", ""),
        )
    return table


def best_panel(best: dict[str, Any]) -> Panel:
    spec = best["spec"]
    adapter = best["adapter_path"] or "(none saved)"
    if best["adapter_path"] and not best["adapter_exists"]:
        adapter += " [red](missing)[/]"
    body = "\n".join(
        [
            f"dev accuracy {fmt.pct(best['accuracy'])} (Δ {fmt.change(best['gain'], best['gain_stderr'])} points)"
            f", {best['steps']} steps, {fmt.duration(best['wall_s'])}",
            f"model: {spec.get('model')}   dataset: {spec.get('dataset')}   seed: {spec.get('seed')}",
            f"reward: {fmt.reward((spec.get('reward') or {}).get('components') or {})}"
            + (f" {fmt.kv(spec['reward']['params'])}" if (spec.get("reward") or {}).get("params") else ""),
            f"budget: {fmt.kv(spec.get('budget') or {})}   eval: {fmt.kv(spec.get('eval') or {})}",
            f"hparams: {fmt.kv(spec.get('hparams') or {})}",
            f"adapter: {adapter}",
        ]
    )
    return Panel(body, title=f"Best trial {best['trial_id']}", title_align="left")


def rounds_table(rounds: list[dict[str, Any]]) -> RenderableType:
    table = Table(title="Rounds", title_justify="left")
    for col in ("round", "planner", "trials", "ok", "failed", "best", "mean", "notes"):
        table.add_column(col, overflow="fold", max_width=60 if col == "notes" else None)
    for r in rounds:
        table.add_row(
            "-" if r["round"] is None else str(r["round"]),
            r["planner"] or "-",
            ", ".join(r["trials"]),
            str(r["succeeded"]),
            str(r["failed"]),
            f"{r['best_trial']} {fmt.pct(r['best_accuracy'])}" if r["best_trial"] else "-",
            fmt.pct(r["mean_accuracy"]),
            fmt.round_notes(r),
        )
    reasons = [
        Text.assemble((f"  {tid}  ", "bold"), text) for r in rounds for tid, text in r["rationales"].items()
    ]
    return Group(table, Text("Planner rationale", style="italic"), *reasons) if reasons else table


def importances_text(imp: dict[str, Any]) -> RenderableType:
    if not imp["params"]:
        return Text(f"Parameter importances: none ({imp['note']}).", style="dim")
    table = Table(
        title=f"Parameter importances (Optuna PED-ANOVA, {imp['n_trials']} trials)", title_justify="left"
    )
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    table.add_column("")
    for name, v in imp["params"].items():
        table.add_row(name, f"{v:.2f}", "█" * round(v * 30))
    return table


def failures_table(failures: list[dict[str, Any]]) -> Table:
    table = Table(title="Failed trials", title_justify="left")
    table.add_column("trial")
    table.add_column("round")
    table.add_column("error", style="red")
    table.add_column("message", overflow="fold")
    for f in failures:
        table.add_row(f["trial_id"], "-" if f["round"] is None else str(f["round"]), f["kind"], f["message"])
    return table


def curves_table(curves: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="Curves per step", title_justify="left")
    table.add_column("trial")
    table.add_column("reward")
    table.add_column("batch accuracy")
    table.add_column("dev accuracy (evals)")
    for trial_id, c in curves.items():
        table.add_row(
            trial_id,
            fmt.curve_line(c["reward_mean"]),
            fmt.curve_line(c["batch_accuracy"]),
            fmt.eval_path(c["eval"]),
        )
    return table
