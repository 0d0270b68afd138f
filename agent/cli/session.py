"""`openrl-agent start|status|report|pause|resume|list`: research sessions, a few lines each over agent.api.

Mounted without a group name, so these are top-level commands. Library errors a user can cause
(unknown session, bad goal or config) become one red line and exit 1; Ctrl-C leaves a resumable session.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from agent.cli.common import UserError, console, fail

app = typer.Typer(no_args_is_help=True)

RUNS_DIR = typer.Option(Path("runs"), "--runs-dir", envvar="OPENRL_AGENT_RUNS", help="Where sessions live.")
TRACK = typer.Option(
    None, "--track", help="Mirror each finished trial to experiment trackers: tensorboard, mlflow or both "
    "(comma-separated; 'none' turns off the config's [tracking]). MLflow honours MLFLOW_TRACKING_URI.",
)
SESSION = typer.Argument(
    None, help="Session id or directory; omitted means the latest session.", show_default=False
)


class Planner(StrEnum):
    gemini = "gemini"
    openai = "openai"
    offline = "offline"


class Launcher(StrEnum):
    local = "local"
    k8s = "k8s"
    tinker = "tinker"


class Format(StrEnum):
    table = "table"
    markdown = "markdown"
    json = "json"


def _examples(*lines: str) -> str:
    return "Examples:\n\n" + "\n\n".join(f"  $ {line}" for line in lines)


def _user_errors() -> tuple[type[Exception], ...]:
    """The library's exception types that mean 'the user can fix this' (imported lazily: fast CLI start)."""
    from agent.goal import GoalError
    from agent.preflight import PreflightError
    from agent.session import SessionError

    return (UserError, SessionError, GoalError, PreflightError)


def resolve_session(session: str | None, runs_dir: Path) -> Path:
    from agent.session import latest_session, load_session

    if session is None:
        return Path(latest_session(runs_dir))
    from rl_core.sessiondir import is_session

    for candidate in (Path(session), runs_dir / session):
        if is_session(candidate):
            load_session(candidate)  # a damaged session.json says so here, with how to recover
            return candidate
    raise UserError(f"no session '{session}' under {runs_dir}/; `openrl-agent list` shows the sessions there")


@app.command(
    epilog=_examples(
        'openrl-agent start "raise dev execution accuracy of the tiny policy" --trials 4 --parallel 2',
        'openrl-agent start "beat 60% dev accuracy in 30 minutes" --model ~/models/gemma-3-270m --planner gemini',
        'openrl-agent start "tune the learning rate, 12 trials, 4 at a time" --config space.toml --launcher k8s',
        'openrl-agent start "raise dev accuracy of micro-gemma, 2 trials" --track tensorboard,mlflow',
        'TINKER_BASE_URL=http://127.0.0.1:8000 openrl-agent start "raise dev accuracy of micro-gemma" --launcher tinker',
    )
)
def start(
    goal: str = typer.Argument(
        ...,
        help="What to achieve, in plain words; numbers in it (trials, minutes, "
        "target accuracy) are read too.",
    ),
    trials: int | None = typer.Option(None, "--trials", min=1, help="Total trials to run."),
    parallel: int | None = typer.Option(None, "--parallel", min=1, help="Trials running at once."),
    model: str | None = typer.Option(
        None, "--model", help="builtin:<name>, or a local Hugging Face model dir."
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="builtin, an imported dataset name (`openrl-agent data import`), or a path."
    ),
    planner: Planner | None = typer.Option(
        None,
        "--planner",
        help="Who proposes trials (default: gemini when GEMINI_API_KEY is set, else offline). openai: any "
        "OpenAI-compatible server, from OPENAI_BASE_URL / OPENAI_API_KEY / OPENRL_AGENT_OPENAI_MODEL.",
    ),
    launcher: Launcher | None = typer.Option(
        None, "--launcher", help="Where trials run (default: the config file's launcher, else local). tinker: "
        "each trial trains as a client of a Tinker-compatible endpoint (`openrl-agent serve`), named by the "
        "config's [launcher] endpoint or TINKER_BASE_URL.",
    ),
    force_parallel: bool = typer.Option(
        False, "--force-parallel", help="Keep --parallel above the usable cores instead of capping it."
    ),
    confirm_seeds: int | None = typer.Option(
        None, "--confirm-seeds", min=0, max=10,
        help="Retrain the winner's recipe with K fresh seeds and report their test mean and spread.",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="A search-space TOML file: parameter ranges, pinned values, fixed spec keys (README, config reference).",
    ),
    budget_minutes: float | None = typer.Option(None, "--budget-minutes", min=0.1, help="Wall-clock budget."),
    track: str | None = TRACK,
    runs_dir: Path = RUNS_DIR,
) -> None:
    """Plan a research session from a goal, then run it with a live view."""
    from agent import api

    overrides = {
        "trials": trials,
        "parallel": parallel,
        "model": model,
        "dataset": dataset,
        "planner": planner.value if planner else None,
        "launcher": launcher.value if launcher else None,
        "config": config,
        "budget_minutes": budget_minutes,
        "tracking": track,
        "confirm_seeds": confirm_seeds,
    }
    with _as_user_error():
        plan = api.plan_goal(goal, {k: v for k, v in overrides.items() if v is not None},
                             progress=lambda line: console.print(line, style="dim", markup=False))
        warnings = api.preflight(plan, runs_dir, force_parallel=force_parallel)
        for warning in warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        if not force_parallel:
            api.fit_parallel(plan, progress=lambda line: console.print(line, style="dim", markup=False))
        console.print(_plan_table(plan))
        session_dir = api.create_session(plan, runs_dir)
    from agent.report.format import shown_path

    console.print(f"session [bold]{session_dir.name}[/] in {shown_path(session_dir)}")
    _run_and_report(session_dir, api.run_session)


@app.command(epilog=_examples("openrl-agent resume", "openrl-agent resume s-20261125-181500"))
def resume(session: str | None = SESSION, runs_dir: Path = RUNS_DIR) -> None:
    """Continue a paused or interrupted session where it stopped; finished trials are kept, not rerun."""
    with _as_user_error():
        session_dir = resolve_session(session, runs_dir)
    from agent import api

    console.print(f"resuming [bold]{session_dir.name}[/]")
    _run_and_report(session_dir, api.resume_session)


def _run_and_report(session_dir: Path, run: Any) -> None:
    from agent.cli.live import run_live
    from agent.report import build_report
    from agent.report.terminal import leaderboard_table, verdict_text

    name = session_dir.name
    try:
        with _as_user_error():
            summary = run_live(session_dir, run, console) or {}
    except KeyboardInterrupt:  # the second Ctrl-C: trials keep running detached and are re-attached on resume
        console.print(
            f"\n[yellow]stopped[/]: nothing finished is lost; continue with `openrl-agent resume {name}`"
        )
        raise typer.Exit(130) from None
    facts = build_report(session_dir, importances=False)
    console.print(leaderboard_table(facts["leaderboard"]))
    if summary.get("state") == "paused":
        console.print(f"[yellow]paused[/]: continue with `openrl-agent resume {name}`")
        return
    console.print(verdict_text(facts))
    console.print(
        f"session {name} {summary.get('state', 'done')} ({summary.get('reason', '')}); "
        f"full report: `openrl-agent report {name}`"
    )
    rows = facts["leaderboard"]
    if rows and not any(r["status"] == "succeeded" for r in rows):
        fail("every trial failed; causes: " + _failure_causes(rows))


def _failure_causes(rows: list[dict[str, Any]]) -> str:
    from collections import Counter

    causes = Counter(
        f"{(r.get('error') or {}).get('kind', r['status'])}: {str((r.get('error') or {}).get('message', ''))[:120]}"
        for r in rows
        if r["status"] != "succeeded"
    )
    return "; ".join(f"{n} x {cause}" for cause, n in causes.most_common(3))


@app.command(epilog=_examples("openrl-agent status", "openrl-agent status s-20261125-181500"))
def status(session: str | None = SESSION, runs_dir: Path = RUNS_DIR) -> None:
    """Where a session stands: state, trials done and running, the leaderboard so far."""
    from agent.report import build_report
    from agent.report.terminal import header, leaderboard_table, verdict_text

    with _as_user_error():
        facts = build_report(resolve_session(session, runs_dir), importances=False)
    console.print(header(facts))
    console.print(verdict_text(facts))
    console.print(leaderboard_table(facts["leaderboard"]) if facts["leaderboard"] else "No trials yet.")


@app.command(
    epilog=_examples(
        "openrl-agent report",
        "openrl-agent report s-20261125-181500 --format markdown > report.md",
        "openrl-agent report --format json | jq .best.reproduce",
        "openrl-agent report --plot curves.png",
        "openrl-agent report --trial t0003",
    )
)
def report(
    session: str | None = SESSION,
    format: Format = typer.Option(
        Format.table, "--format", "-f", help="table (terminal), markdown, or json."
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="Also write learning curves and best-so-far to this PNG."
    ),
    trial: str | None = typer.Option(
        None, "--trial", help="Show one trial whole: spec, rationale, curves, wrong SQL, lineage."
    ),
    runs_dir: Path = RUNS_DIR,
) -> None:
    """The verdict (test-split confirmation), leaderboard, trial tree, best trial with its reproduce command, rounds, failures, curves."""
    from agent.report import build_report, render_markdown, render_terminal, write_plot

    if trial is not None:
        _report_trial(session, trial, format, runs_dir)
        return
    if plot is not None and plot.suffix.lower() != ".png":
        fail(f"--plot writes a PNG; give a file name ending in .png, not {plot.name}")
    with _as_user_error():
        facts = build_report(resolve_session(session, runs_dir))
    if format is Format.json:
        typer.echo(json.dumps(facts, indent=2))
    elif format is Format.markdown:
        typer.echo(render_markdown(facts), nl=False)
    else:
        render_terminal(facts, console)
    if plot is not None:
        # stderr, so `--format json --plot x.png > out.json` stays valid JSON
        typer.echo(f"wrote {write_plot(facts, plot)}", err=True)


def _report_trial(session: str | None, trial_id: str, format: Format, runs_dir: Path) -> None:
    from agent.report.trial_view import TrialNotFound, trial_facts, trial_renderable

    if format is Format.markdown:
        fail("--trial prints to the terminal (--format table) or as JSON (--format json), not markdown")
    with _as_user_error():
        session_dir = resolve_session(session, runs_dir)
    try:
        facts = trial_facts(session_dir, trial_id)
    except TrialNotFound as exc:
        fail(str(exc))
    if format is Format.json:
        typer.echo(json.dumps(facts, indent=2, default=str))
    else:
        console.print(trial_renderable(facts))


@app.command(epilog=_examples("openrl-agent pause", "openrl-agent pause s-20261125-181500"))
def pause(session: str | None = SESSION, runs_dir: Path = RUNS_DIR) -> None:
    """Ask a running session to pause: nothing new starts, local trials stop and re-run on `resume`."""
    from agent.session import load_session, request_pause

    with _as_user_error():
        session_dir = resolve_session(session, runs_dir)
        state = (load_session(session_dir).get("status") or {}).get("state")
        if state != "running":
            console.print(f"{session_dir.name} is not running ({state}); nothing to pause")
            return
        request_pause(session_dir)
    console.print(
        f"pause requested for [bold]{session_dir.name}[/]: nothing new starts; running local trials stop and "
        f"re-run on resume (Kubernetes trials keep running); continue with `openrl-agent resume {session_dir.name}`"
    )


@app.command(name="list", epilog=_examples("openrl-agent list", "openrl-agent list --runs-dir /data/runs"))
def list_(runs_dir: Path = RUNS_DIR) -> None:
    """Every session under the runs directory, oldest first."""
    from rich.table import Table

    from agent.report import format as fmt
    from agent.report.facts import leaderboard
    from agent.session import list_sessions

    sessions = list_sessions(runs_dir, damaged=True)
    if not sessions:
        console.print(f'no sessions under {runs_dir}; start one with `openrl-agent start "<goal>"`')
        return
    table = Table()
    for col in ("session", "state", "trials", "best dev acc", "goal"):
        table.add_column(col, overflow="fold")
    for s in sessions:
        if s.get("damaged"):
            table.add_row(Path(s["dir"]).name, "[red]damaged[/]", "-", "-", s["damaged"])
            continue
        rows = leaderboard(Path(s["dir"]))
        done = sum(r["status"] in ("succeeded", "failed") for r in rows)
        best = rows[0] if rows and rows[0]["accuracy"] is not None else None
        table.add_row(
            Path(s["dir"]).name,
            _state(s, Path(s["dir"])),
            f"{done}/{_planned(s) or len(rows)}",
            f"{fmt.pct(best['accuracy'])} ({best['trial_id']})" if best else "-",
            str(s.get("goal", "")),
        )
    console.print(table)


def _state(session: dict[str, Any], session_dir: Path) -> str:
    from agent.report.facts import session_state

    return session_state(session_dir, session)


def _planned(session: dict[str, Any]) -> int | None:
    from agent.report.facts import planned_trials

    return planned_trials(session)


def _plan_table(plan: Any) -> Any:
    from agent.cli.live import plan_renderable

    return plan_renderable(plan)


class _as_user_error:
    """Turn the library's user-facing errors into one red line; anything else stays a real traceback."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None and isinstance(exc, _user_errors()):
            fail(str(exc))
        return False
