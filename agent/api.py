"""The library API the CLI (agent/cli/session.py) calls. Nothing here prints.

- `plan_goal(goal, overrides) -> Plan`: parse a free-text goal (agent/goal.py); raises GoalError.
  overrides (CLI flags): trials, parallel, budget_minutes, model, dataset, planner (gemini|offline),
  launcher (local|k8s|tinker), launcher_options (dict), seed, eval_limit, eval_every_steps, trial_seconds,
  max_steps, metric, target, pruner (median|none), gemini_model, gemini_base_url, and config: a
  TOML/JSON file with any of these keys plus search-space sections ([params.<name>], [fixed]).
  Precedence: flags > config file > goal text > defaults; Plan.sources says which applied.
- `create_session(plan, runs_dir="runs") -> Path`: runs/<session-id>/ with session.json and an
  empty study journal.
- `run_session(session_dir, on_event=None) -> dict`: runs the loop until the session is done
  (goal met, trial or time budget spent) or paused. A fresh session starts; a paused one resumes;
  one killed mid-step continues from its last LangGraph checkpoint. `resume_session` is the same.
  SIGINT (Ctrl-C) requests a pause: no new launches; local trials still running are cancelled and
  re-run from scratch on resume (their partial work is dropped, so every counted result comes from
  one complete run); Kubernetes trials keep running and are collected on resume. A second Ctrl-C
  raises KeyboardInterrupt at once: nothing is lost (local trials keep running detached and are
  re-attached on resume).
  Returns {"session", "dir", "state" (paused|done), "reason", "finished", "failed", "best"}.
- `request_pause(session_dir)`: writes the `pause` flag file the running loop honours within a poll.
- `list_sessions(runs_dir)`, `latest_session(runs_dir) -> Path`, `load_session(session_dir) -> dict`.
- `tools.leaderboard.leaderboard(session_dir) -> list[dict]`: the ranked trial rows.

Events passed to on_event (dicts, each with "type"):
  plan {session, plan} | round {round, planner, fallback, notes, proposals: [{trial_id, params,
  reward, rationale, planner}]} | trial_started {trial_id, params, max_steps} | trial_progress {trial_id,
  step, max_steps, reward, eta_s} | trial_finished {trial_id, status, score, error} |
  repeated_failure {signature, count, trial_ids, error} | pausing {} | session_done {reason, state} |
  tracking_warning {message} (plan.tracking: a tracker that failed; the trial and session go on)
"""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.confirm import TEST_SPLIT, load_confirmation, run_confirmation, skip_confirmation
from agent.goal import GoalError, plan_goal
from agent.plan import LAUNCHER_LIMITS, LAUNCHERS, Plan, as_plan
from agent.planners.base import Planner
from agent.preflight import PreflightError, check_plan
from agent.session import (
    SessionError,
    clear_pause,
    latest_session,
    list_sessions,
    load_session,
    new_session_id,
    open_study,
    request_pause,
    save_session,
    update_status,
)
from cluster.base import Launcher, LauncherError
from rl_core.sessiondir import checkpoints_file, confirm_dir, lock_file, session_dir_of, trials_dir
from tools.tracking import track_session

__all__ = ["GoalError", "Plan", "PreflightError", "SessionError", "create_session", "preflight", "latest_session", "list_sessions",
           "fit_parallel", "load_session", "plan_goal", "request_pause", "resume_session", "run_session",
           "make_launcher"]

OnEvent = Callable[[dict[str, Any]], None]


def preflight(plan: Plan, runs_dir: str | os.PathLike[str] = "runs", *, force_parallel: bool = False) -> list[str]:
    """Check the plan against the spec, the model, the dataset and the runs directory before anything
    exists (agent/preflight.py); raises PreflightError; returns warnings (caps already applied)."""
    return check_plan(plan, runs_dir, force_parallel=force_parallel)


def fit_parallel(plan: Plan, progress: Callable[[str], None] = lambda line: None) -> str | None:
    """For a local plan with several slots: measure how fast trials train side by side on this machine
    (agent/speed.py, cached) and keep only as many slots as each keep the plan's `solo_speed_floor` of
    one's speed alone. Returns the plan note that says so, or None when the plan stays as it is; a
    probe that fails (a model that cannot load) leaves the plan as it is, with a note."""
    from agent.preflight import usable_cores
    from agent.speed import SpeedError, choose_parallel
    from cluster.local import LocalLauncher

    if plan.launcher.get("name", "local") != "local" or plan.constraints.parallel <= 1:
        return None
    try:
        return choose_parallel(plan, lambda slots, runs: LocalLauncher(runs_dir=runs, slots=slots),
                               cores=usable_cores(), progress=progress)
    except SpeedError as exc:
        note = f"could not measure training speed side by side ({exc}); keeping {plan.constraints.parallel} at a time"
        plan.notes.append(note)
        return note


def create_session(plan: Plan, runs_dir: str | os.PathLike[str] = "runs") -> Path:
    """A new session directory for a plan that passes `preflight` (checked again here)."""
    check_plan(plan, runs_dir, force_parallel=True)  # caps were the caller's choice; problems are not
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    session_id = new_session_id(runs_dir)
    session_dir = session_dir_of(runs_dir, session_id)
    trials_dir(session_dir).mkdir(parents=True)
    save_session(session_dir, {"id": session_id, "created_at": time.time(), **plan.to_json(),
                               "status": {"state": "created", "stop_reason": None}})
    open_study(session_dir)  # creates the journal
    return session_dir


def make_launcher(plan: Plan | dict[str, Any], session_dir: Path) -> Launcher:
    """The launcher the session's settings name; the LocalLauncher and the TinkerLauncher (a trial as
    a client of the plan's endpoint, else $TINKER_BASE_URL) get one slot per parallel trial."""
    plan = as_plan(plan)
    settings = dict(plan.launcher)
    name = settings.pop("name", "local")
    if name == "local":
        from cluster.local import LocalLauncher

        return LocalLauncher(runs_dir=Path(session_dir).parent, slots=plan.constraints.parallel,
                             **settings)
    if name == "k8s":
        from cluster.base import LauncherError
        from cluster.k8s_launcher import KubernetesLauncher
        from cluster.k8s_manifests import KubernetesConfig

        try:
            return KubernetesLauncher(KubernetesConfig(**settings), runs_dir=Path(session_dir).parent)
        except TypeError as exc:
            raise SessionError(f"launcher settings: {exc}; see cluster/k8s_manifests.py KubernetesConfig") from None
        except LauncherError as exc:
            raise SessionError(str(exc)) from None
    if name == "tinker":
        from cluster.tinker_launcher import TinkerLauncher

        endpoint = settings.pop("endpoint", None) or os.environ.get("TINKER_BASE_URL")
        if not endpoint:
            raise SessionError("the tinker launcher needs an endpoint: endpoint = \"http://...\" in the config's "
                               "[launcher] table, or export TINKER_BASE_URL")
        try:
            return TinkerLauncher(endpoint, runs_dir=Path(session_dir).parent, slots=plan.constraints.parallel,
                                  **settings)
        except TypeError as exc:
            raise SessionError(f"launcher settings: {exc}; the tinker launcher takes endpoint, wall_s and "
                               "kill_grace_s") from None
    raise SessionError(f"launcher {name!r} is unknown; use {', '.join(LAUNCHERS)}")


def run_session(session_dir: str | os.PathLike[str], on_event: OnEvent | None = None, *,
                launcher: Launcher | None = None, planner: Planner | None = None, poll_s: float = 0.5,
                confirm_launcher: Launcher | None = None) -> dict[str, Any]:
    """Run (or resume) a session until done or paused, then confirm its winner on the test split
    (agent/confirm.py); see the module docstring. A caller that passes its own `launcher` confirms
    only when it also passes `confirm_launcher`."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from agent.graph import build_graph
    from agent.planners.factory import make_planner

    session_dir = Path(session_dir)
    stored = load_session(session_dir)
    plan = Plan.from_json(stored)
    # Finished trials are mirrored to the plan's trackers (TensorBoard, MLflow); never fails a trial.
    emit = track_session(on_event or (lambda event: None), session_dir, plan.tracking)
    with _exclusive(session_dir):
        clear_pause(session_dir)
        if confirm_launcher is None and launcher is None:
            confirm_launcher = make_launcher(plan, confirm_dir(session_dir))
        launcher = launcher or make_launcher(plan, session_dir)
        planner = planner or make_planner(plan.planner, seed=plan.constraints.seed,
                                          progress=lambda line: emit({"type": "planner_wait", "line": line}))
        update_status(session_dir, state="running", stop_reason=None, pid=os.getpid())
        emit({"type": "plan", "session": plan.id, "plan": {k: v for k, v in stored.items() if k != "status"}})
        conn = sqlite3.connect(str(checkpoints_file(session_dir)), check_same_thread=False)
        try:
            graph = build_graph(planner, launcher, session_dir=session_dir, plan=plan, emit=emit,
                                checkpointer=SqliteSaver(conn), poll_s=poll_s)
            config = {"configurable": {"thread_id": plan.id}, "recursion_limit": 1_000_000}
            with _signals_pause(session_dir, emit):
                final = graph.invoke(_input_for(graph, config), config, durability="sync")
        except KeyboardInterrupt:  # a second Ctrl-C: trials run on detached; resume re-attaches them
            update_status(session_dir, state="interrupted", stop_reason="interrupted", pid=None)
            raise
        except LauncherError as exc:  # e.g. a cluster that refuses connections: one line, resumable
            update_status(session_dir, state="failed", stop_reason=f"launcher: {exc}", pid=None)
            raise SessionError(f"{exc}; the session is kept: fix the launcher and `openrl-agent resume "
                               f"{session_dir.name}`") from None
        except Exception as exc:
            update_status(session_dir, state="failed", stop_reason=f"{type(exc).__name__}: {exc}", pid=None)
            raise
        finally:
            conn.close()
        reason = final.get("stop_reason") or "stopped"
        state = "paused" if reason == "paused" else "done"
        if state == "done" and confirm_launcher is not None:
            _confirm(session_dir, plan, confirm_launcher, emit, poll_s)
        clear_pause(session_dir)
        update_status(session_dir, state=state, stop_reason=reason, pid=None)
    summary = _summary(session_dir, state, reason)
    emit({"type": "session_done", "reason": reason, "state": state})
    return summary


def resume_session(session_dir: str | os.PathLike[str], on_event: OnEvent | None = None,
                   **kwargs: Any) -> dict[str, Any]:
    """Continue a paused or killed session (same as run_session, named for the CLI)."""
    load_session(session_dir)
    return run_session(session_dir, on_event, **kwargs)


def _input_for(graph: Any, config: dict[str, Any]) -> dict[str, Any] | None:
    snapshot = graph.get_state(config)
    if not snapshot.values:  # first run
        return {"round": 0, "running": {}, "finished": [], "feedback": [], "active_s": 0.0, "stop_reason": None}
    if snapshot.next:  # killed mid-run: continue the step that was interrupted
        return None
    return {"stop_reason": None, "next": None}  # paused or done: start again at reflect


def _confirm(session_dir: Path, plan: Plan, launcher: Launcher, emit: OnEvent, poll_s: float) -> None:
    """The test-split verdict, within what is left of the time budget."""
    from agent.budget import SessionClock
    from sql_env.datasets.store import DatasetError, dataset_dir, splits_of

    limits = LAUNCHER_LIMITS.get(plan.launcher.get("name", "local"))
    if limits is not None:  # its trials' weights are where the confirmation jobs cannot load them
        emit({"type": "confirm_skipped", "reason": skip_confirmation(session_dir, limits.confirm)["skipped"]})
        return
    try:
        has_test = TEST_SPLIT in splits_of(dataset_dir(plan.constraints.dataset))
    except DatasetError:
        has_test = False
    if not has_test:
        emit({"type": "confirm_skipped", "reason": f"the dataset has no {TEST_SPLIT!r} split"})
        return
    minutes = plan.constraints.budget_minutes
    timeout = None if not minutes else max(30.0, minutes * 60 - SessionClock(session_dir).used())
    with _signals_pause(session_dir, emit):
        run_confirmation(session_dir, plan, launcher, emit=emit, poll_s=poll_s, timeout_s=timeout)


def _summary(session_dir: Path, state: str, reason: str) -> dict[str, Any]:
    from tools.leaderboard import leaderboard

    rows = leaderboard(session_dir)
    finished = [r for r in rows if r["status"] in ("succeeded", "failed", "pruned")]
    return {"session": session_dir.name, "dir": str(session_dir), "state": state, "reason": reason,
            "finished": len(finished), "failed": sum(r["status"] == "failed" for r in rows),
            "best": rows[0] if rows and rows[0]["rank"] == 1 else None,
            "confirm": load_confirmation(session_dir)}


@contextmanager
def _exclusive(session_dir: Path) -> Iterator[None]:
    """One loop per session: a flock the kernel drops when the process dies, even by kill -9."""
    with open(lock_file(session_dir), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SessionError(f"session {session_dir.name} is already running in another process; "
                               f"pause it with `openrl-agent pause {session_dir.name}`") from None
        yield


@contextmanager
def _signals_pause(session_dir: Path, emit: OnEvent) -> Iterator[None]:
    """First Ctrl-C or a SIGTERM (a service manager, `kill`): pause gracefully, so local trials stop
    instead of running on alone. A second Ctrl-C: the default KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        request_pause(session_dir)
        emit({"type": "pausing"})

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
