"""The report as Rich renderables for the terminal (`openrl-agent report`, and the live view's leaderboard)."""

from __future__ import annotations

import textwrap
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.report import format as fmt

RATIONALE_CHARS = 120  # the leaderboard shows the start; the Rounds section has every rationale in full
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
    parts: list[RenderableType] = []
    if facts.get("confirm") and facts["confirm"].get("trials"):
        parts.append(simple_table("Confirmation on the sealed test split", fmt.CONFIRM_HEADER,
                                  fmt.confirm_rows(facts["confirm"])))
    if facts.get("tree"):
        parts.append(simple_table("Trial tree (changes in points, paired standard errors on the same dev questions)",
                                  fmt.TREE_HEADER, fmt.tree_rows(facts["tree"])))
    parts += [rounds_table(facts["rounds"]), importances_text(facts["importances"])]
    if facts["failures"]:
        parts.append(failures_table(facts["failures"]))
    if facts["curves"]:
        parts.append(curves_table(facts["curves"]))
    return Group(*parts)


def simple_table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    return table


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


_FIXED = (("#", "right"), ("trial", "left"), ("status", "left"), ("dev acc", "right"), ("Δ start ± se", "right"),
          ("steps", "right"), ("wall", "right"))
_SHORTENED = (("key hparams", 3), ("reward", 2), ("rationale", 3))  # share of the room left, by weight
_GAP = 2  # cells between two columns (SIMPLE_HEAD's blank rule + collapsed padding)


def leaderboard_table(rows: list[dict[str, Any]], title: str = "Leaderboard") -> RenderableType:
    """At most two lines per trial at any width: the figures never wrap; hyperparameters, reward and
    rationale are shortened with `…` to the room the terminal leaves (`openrl-agent report --trial ID` shows a
    trial whole; markdown and JSON keep everything)."""
    return _Leaderboard([_cells(r) for r in rows], title)


def _cells(r: dict[str, Any]) -> list[Text]:
    signal = fmt.is_signal(r["gain"], r["gain_stderr"])
    rationale = fmt.clip(_one_line(r["rationale"] or ""), RATIONALE_CHARS) or (r["error"] or {}).get("kind", "")
    return [Text(str(r["rank"] or "")), Text(r["trial_id"]),
            Text(fmt.status(r), style=STATUS_STYLE.get(r["status"], "")), Text(fmt.pct(r["accuracy"])),
            Text(fmt.change(r["gain"], r["gain_stderr"]), style="green" if signal else ""),
            Text(fmt.steps(r["steps"], r["max_steps"])), Text(fmt.duration(r["wall_s"])),
            Text(fmt.params(r["params"])), Text(_one_line(r["reward"])), Text(rationale)]


class _Leaderboard:
    """Sizes the shortened columns to the width it is rendered at (the live view, a pipe, a wide
    screen): each gets at most two lines, cut with `…`; below about 90 columns `wall`, then `steps`,
    make room."""

    def __init__(self, cells: list[list[Text]], title: str) -> None:
        self.cells, self.title = cells, title

    def __rich_console__(self, console: Console, options: Any) -> Any:
        names = [n for n, _ in _FIXED] + [n for n, _ in _SHORTENED]
        natural = {n: max([len(n)] + [row[i].cell_len for row in self.cells]) for i, n in enumerate(names)}
        shown = [n for n, _ in _FIXED]
        room = options.max_width - _GAP * (len(names) - 1) - 2 - sum(natural[n] for n in shown)
        for optional in ("wall", "steps"):
            if room >= 3 * 12:
                break
            shown.remove(optional)
            room += natural[optional] + _GAP
        flex = [n for n, _ in _SHORTENED]
        one_line = [natural[n] for n in flex]
        widths = one_line if sum(one_line) <= room else _share(
            room, [max(-(-w // 2), min(w, 12)) for w in one_line], [w for _, w in _SHORTENED])
        table = Table(title=self.title, title_justify="left", expand=False, show_lines=False,
                      box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False)
        for name, justify in _FIXED:
            if name in shown:
                table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for name, width in zip(flex, widths, strict=True):
            table.add_column(name, no_wrap=True, width=width)
        for row in self.cells:
            fixed = [cell for (name, _), cell in zip(_FIXED, row, strict=False) if name in shown]
            table.add_row(*fixed, *(_two_lines(cell, w) for cell, w in zip(row[len(_FIXED):], widths, strict=True)))
        yield table


def _two_lines(cell: Text, width: int) -> Text:
    """The cell wrapped to `width`, at most two lines, the second cut with `…` if more was left."""
    lines = textwrap.wrap(cell.plain, width) or [""]
    if len(lines) > 2:
        lines = [lines[0], fmt.clip(" ".join(lines[1:]), width)]
    return Text("\n".join(lines), style=cell.style)


def _share(room: int, natural: list[int], weights: list[int], least: int = 8) -> list[int]:
    """Widths for the shortened columns: the room by weight, none under `least` (or its natural width if
    smaller), none over its natural width; what a narrow column does not need goes to the others."""
    widths = [min(least, n) for n in natural]
    left, open_ = max(0, room - sum(widths)), [i for i, n in enumerate(natural) if widths[i] < n]
    while left > 0 and open_:
        total = sum(weights[i] for i in open_)
        given = 0
        for i in list(open_):
            give = min(max(1, left * weights[i] // total), natural[i] - widths[i], left - given)
            widths[i] += give
            given += give
            if widths[i] >= natural[i]:
                open_.remove(i)
        left -= given
        if given == 0:
            break
    return widths


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


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
