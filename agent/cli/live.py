"""The live view of `openrl-agent start` and `resume`: running trials, the growing leaderboard, the planner's reasons.

The research loop calls `LiveView.on_event` (possibly from worker threads); Rich redraws the view
from that state a few times a second. Each round and each finished trial is also printed as a line
above the view, so the scrollback (and a non-terminal log) keeps the whole story.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agent.report import format as fmt
from agent.report.facts import leaderboard
from agent.report.terminal import leaderboard_table

Event = dict[str, Any]


class LiveView:
    def __init__(self, session_dir: Path, console: Console):
        self.session_dir = Path(session_dir)
        self.console = console
        # Re-entrant: the SIGINT handler emits "pausing" on the main thread, possibly mid-event.
        self._lock = threading.RLock()
        self._running: dict[str, dict[str, Any]] = {}
        self._rows: list[dict[str, Any]] = []
        self._round: dict[str, Any] | None = None
        self._waiting: tuple[str, float] | None = None  # the LLM planner's last progress line, and since when
        self._started = time.monotonic()
        self.done: Event | None = None

    def on_event(self, event: Event) -> None:
        handler = _HANDLERS.get(event.get("type", ""))
        if handler is None:
            return
        with self._lock:
            lines = handler(self, event) or []
        # Printed outside the lock: printing redraws the live view, whose rendering takes the lock.
        for line in lines:
            self.console.print(line)

    # -- event handlers: update state under the lock, return the lines to print --
    def _on_planner_wait(self, ev: Event) -> list[RenderableType]:
        first = self._waiting is None
        self._waiting = (str(ev.get("line", "")), self._waiting[1] if self._waiting else time.monotonic())
        return [Text(f"  {self._waiting[0]}", style="dim")] if first else []

    def _on_round(self, ev: Event) -> list[RenderableType]:
        self._round = ev
        self._waiting = None
        lines: list[RenderableType] = [Text(f"Round {ev.get('round', '?')} ({ev.get('planner', 'planner')})",
                                            style="bold magenta")]  # fmt: skip
        if ev.get("fallback"):
            lines.append(Text(f"  fallback: {ev['fallback']}", style="yellow"))
        for p in ev.get("proposals") or []:
            line = Text.assemble(
                ("  " + str(p.get("trial_id", "")), "bold"), f"  {fmt.params(_shown(p.get('params') or {}))}"
            )
            if p.get("rationale"):
                line.append(f"\n    {p['rationale']}", style="italic dim")
            lines.append(line)
        return lines

    def _on_started(self, ev: Event) -> None:
        self._running[ev["trial_id"]] = {
            "step": 0,
            "max_steps": ev.get("max_steps"),
            "reward": None,
            "eta_s": None,
        }

    def _on_progress(self, ev: Event) -> None:
        state = self._running.setdefault(ev["trial_id"], {})
        state.update({k: ev.get(k) for k in ("step", "max_steps", "reward")})
        state["eta_s"] = ev.get("eta_s")  # agent.budget.trial_eta_s, the loop's one estimate
        state["eta_at"] = time.monotonic()

    def _on_finished(self, ev: Event) -> list[RenderableType]:
        self._running.pop(ev["trial_id"], None)
        self._rows = [r for r in leaderboard(self.session_dir) if r["status"] in ("succeeded", "failed")]
        row = next((r for r in self._rows if r["trial_id"] == ev["trial_id"]), None)
        status = ev.get("status", "finished")
        if row and row["accuracy"] is not None:
            msg = f"dev {fmt.pct(row['accuracy'])} (Δ {fmt.change(row['gain'], row['gain_stderr'])} points)"
        elif row and row["error"]:
            msg = f"{row['error'].get('kind')}: {row['error'].get('message', '')}"
        else:
            msg = ""
        style = "green" if status == "succeeded" else "red"
        return [Text.assemble(f"  {ev['trial_id']} ", (status, style), f"  {msg}")]

    def _on_pausing(self, ev: Event) -> list[RenderableType]:
        return [Text.from_markup("[yellow]pausing[/]: no new trials start; running local trials stop and re-run "
                                 "on resume (Ctrl-C again stops at once)")]  # fmt: skip

    def _on_repeated_failure(self, ev: Event) -> list[RenderableType]:
        ids = ", ".join(ev.get("trial_ids") or [])
        return [Text.from_markup(f"[yellow]{ev.get('count')} trials failed the same way[/] ({ids}): ")
                + Text(str(ev.get("signature")))]  # fmt: skip

    def _on_tracking_warning(self, ev: Event) -> list[RenderableType]:
        return [Text(f"  {ev.get('message', '')}", style="dim")]  # the trial goes on; only its mirror is missing

    def _on_warning(self, ev: Event) -> list[RenderableType]:
        return [Text.assemble(("warning: ", "yellow"), str(ev.get("message", "")))]

    def _on_confirm_started(self, ev: Event) -> list[RenderableType]:
        trials = ", ".join(ev.get("trials") or [])
        return [Text(f"confirming on the sealed test split: {trials} and the base policy "
                     f"({ev.get('jobs')} evaluation jobs)", style="bold")]

    def _on_confirm_done(self, ev: Event) -> list[RenderableType]:
        verdict = ev.get("verdict") or {}
        return [Text(str(verdict.get("text", "")), style="bold green" if verdict.get("holds") else "bold yellow")]

    def _on_confirm_skipped(self, ev: Event) -> list[RenderableType]:
        return [Text(f"no test-split confirmation: {ev.get('reason')}", style="yellow")]

    def _on_done(self, ev: Event) -> None:
        self.done = ev
        self._running.clear()

    # -- rendering --
    def __rich__(self) -> RenderableType:
        with self._lock:
            parts: list[RenderableType] = [self._running_table()]
            if self._waiting is not None:
                line, since = self._waiting
                parts.append(Text(f"planner: {line}; waiting {fmt.duration(time.monotonic() - since)}",
                                  style="yellow"))
            if self._rows:
                parts.append(leaderboard_table(self._rows, title="Leaderboard so far"))
            elapsed = fmt.duration(time.monotonic() - self._started)
            parts.append(
                Text(
                    f"elapsed {elapsed} · Ctrl-C or `openrl-agent pause` to stop; "
                    "`openrl-agent resume` continues",
                    style="dim",
                )
            )
            return Group(*parts)

    def _running_table(self) -> RenderableType:
        if not self._running:
            return Text("no trial running", style="dim")
        table = Table(title="Running", title_justify="left")
        for col in ("trial", "step", "progress", "reward", "ETA"):
            table.add_column(col, justify="left" if col in ("trial", "progress") else "right")
        for trial_id, s in sorted(self._running.items()):
            step, total = s.get("step") or 0, s.get("max_steps")
            table.add_row(
                trial_id,
                fmt.steps(step, total),
                _bar(step, total),
                "-" if s.get("reward") is None else f"{s['reward']:.2f}",
                fmt.duration(_counted_down(s)),
            )
        return table


_HANDLERS: dict[str, Callable[[LiveView, Event], list[RenderableType] | None]] = {
    "planner_wait": LiveView._on_planner_wait,
    "round": LiveView._on_round,
    "trial_started": LiveView._on_started,
    "trial_progress": LiveView._on_progress,
    "trial_finished": LiveView._on_finished,
    "pausing": LiveView._on_pausing,
    "repeated_failure": LiveView._on_repeated_failure,
    "tracking_warning": LiveView._on_tracking_warning,
    "warning": LiveView._on_warning,
    "confirm_started": LiveView._on_confirm_started,
    "confirm_done": LiveView._on_confirm_done,
    "confirm_skipped": LiveView._on_confirm_skipped,
    "session_done": LiveView._on_done,
}


def _counted_down(state: dict[str, Any]) -> float | None:
    eta = state.get("eta_s")
    if eta is None:
        return None
    return max(0.0, eta - (time.monotonic() - state.get("eta_at", time.monotonic())))


def _shown(params: dict[str, Any]) -> dict[str, Any]:
    """A proposal's parameters minus reward components switched off (weight 0), which only add noise."""
    return {k: v for k, v in params.items() if not (k.startswith("reward_") and not v)}


def _bar(step: int, total: int | None, width: int = 20) -> str:
    if not total:
        return ""
    filled = min(width, round(width * step / total))
    return "█" * filled + "░" * (width - filled)


def run_live(session_dir: Path, run: Callable[..., Any], console: Console) -> Any:
    """Run `run(session_dir, on_event)` (run_session or resume_session) under the live view; returns its summary."""
    view = LiveView(session_dir, console)
    with Live(view, console=console, refresh_per_second=4, transient=True, redirect_stdout=False,
              redirect_stderr=False):  # fmt: skip
        return run(session_dir, view.on_event)


def plan_renderable(plan: Any) -> RenderableType:
    """The parsed plan, each value with where it came from (goal text, a flag, or a default)."""
    data = plan.to_json() if hasattr(plan, "to_json") else dict(plan)
    sources = data.get("sources") or {}
    c, o = data.get("constraints") or {}, data.get("objective") or {}
    table = Table(title="Plan", title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_column(style="dim")
    table.add_row("goal", data.get("goal", ""), "")
    target = o.get("target")
    objective = fmt.objective({"objective": o.get("metric"), "target": target})
    table.add_row("objective", objective, sources.get("metric", ""))
    for key in ("trials", "parallel", "budget_minutes", "trial_seconds", "model", "dataset", "max_steps"):
        if c.get(key) is not None:
            table.add_row(key.replace("_", " "), fmt.value(c[key]), sources.get(key, ""))
    table.add_row("planner", str((data.get("planner") or {}).get("name")), "")
    table.add_row("launcher", str((data.get("launcher") or {}).get("name")), "")
    if (data.get("tracking") or {}).get("backends"):
        table.add_row("tracking", ", ".join(data["tracking"]["backends"]), "")
    space = data.get("search_space") or {}
    table.add_row(
        "search", "; ".join(_describe_param(n, p) for n, p in (space.get("params") or {}).items()), ""
    )
    if space.get("fixed"):
        table.add_row("fixed", " ".join(f"{k}={fmt.value(v)}" for k, v in space["fixed"].items()), "")
    for note in data.get("notes") or []:
        table.add_row("note", note, "")
    return table


def _describe_param(name: str, p: dict[str, Any]) -> str:
    if p.get("choices") is not None:
        return f"{name} ∈ {{{', '.join(fmt.value(c) for c in p['choices'])}}}"
    scale = " log" if p.get("log") else ""
    return f"{name} {fmt.value(p.get('low'))}..{fmt.value(p.get('high'))}{scale}"
