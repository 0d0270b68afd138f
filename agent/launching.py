"""Launching and adopting a session's trials: the part of the research loop (agent/loop.py) that
turns RUNNING study trials into running processes or pods, and stops them on a pause or at the
time budget's end.

Crash safety: every RUNNING study trial the loop does not track is an orphan; `launch` re-attaches
it (the launcher's handle survived the agent), hands it to collect (its result.json exists), or
submits it again (a launcher adopts a trial it already runs, so this never starts it twice).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from agent import study as st
from cluster.base import Launcher, LauncherError, TrialHandle
from rl_core.sessiondir import trial_dir
from rl_core.spec import SpecError, TrialSpec
from rl_core.trialdir import TrialDirError, failed_result, read_result, was_cancelled, write_result

Emit = Callable[[dict[str, Any]], None]


class Launching:
    """Launch, adopt, pause and stop; mixed into agent.loop.Research, which owns the state below."""

    dir: Path
    session: str
    study: optuna.Study
    launcher: Launcher
    emit: Emit
    metric: str
    clock: Any  # agent.budget.SessionClock: the session's running seconds
    _handles: dict[str, TrialHandle]

    def _spec(self, trial: Any, max_seconds: float | None = None) -> TrialSpec:
        raise NotImplementedError  # Research: the trial's spec from its params and the plan

    def _launch_seconds(self) -> float | None:
        raise NotImplementedError  # Research: the GRPO seconds the clock grants a launch now

    def _reattach(self) -> list[TrialHandle]:
        """The launcher's handles of this session's trials that outlived an agent. When it cannot
        list them, say so: their trials are resubmitted, which a launcher answers by adopting a
        trial it already runs (never a second run)."""
        try:
            return list(self.launcher.reattach(self.session))
        except Exception as exc:  # noqa: BLE001 - any launcher failure is reported, then recovered from
            self.emit({"type": "warning", "message": f"could not re-attach running trials ({type(exc).__name__}: "
                                                      f"{_first_line(exc)}); they are resubmitted and adopted"})
            return []

    def _forget_paused_runs(self) -> None:
        """Trials a pause cancelled re-run from scratch: drop their old directories before the
        launcher re-attaches (it would otherwise hand back the cancelled run)."""
        for trial in st.by_state(self.study, TrialState.RUNNING):
            tdir = trial_dir(self.dir, st.trial_id_of(trial))
            if was_cancelled(tdir) and result_or_damaged(tdir) is None:
                shutil.rmtree(tdir)

    def launch(self, state: dict[str, Any]) -> dict[str, Any]:
        """Start (or re-attach, or hand to collect) every RUNNING study trial not yet tracked."""
        tracked = state.get("running") or {}
        updates: dict[str, Any] = {}
        for trial in st.by_state(self.study, TrialState.RUNNING):
            tid = st.trial_id_of(trial)
            if tid in tracked:
                continue
            handle = self._adopt(tid) or self._submit(trial)
            updates[tid] = {"number": trial.number, "handle": asdict(handle) if handle else None}
        return {"running": updates}

    def _adopt(self, tid: str) -> TrialHandle | None:
        """A handle for a trial that survived an agent restart, or None if it must (re)start."""
        handle = self._handles.get(tid)
        if result_or_damaged(trial_dir(self.dir, tid)) is not None:
            return handle or TrialHandle(self.session, tid, "none", str(trial_dir(self.dir, tid)))
        if handle is None:
            return None
        if self.launcher.status(handle) == "cancelled":  # stopped by a pause: run it again
            return None
        return handle

    def _submit(self, trial: Any) -> TrialHandle | None:
        tid = st.trial_id_of(trial)
        tdir = trial_dir(self.dir, tid)
        if was_cancelled(tdir):
            shutil.rmtree(tdir)  # a cancelled run's leftovers; anything else may be a running pod's output
        # (a launcher adopts a trial it already runs: resubmitting never starts it twice)
        try:
            spec = self._spec(trial, max_seconds=self._launch_seconds())
        except SpecError as exc:  # plan-time checks make this rare (e.g. Optuna's pick breaks a cross-field rule)
            write_result(tdir, failed_result({"trial_id": tid, "params": trial.params}, "bad_spec", str(exc)))
            return None
        try:
            handle = self.launcher.submit(spec.to_json())
        except LauncherError:
            raise
        except Exception as exc:  # an unreachable cluster, a full disk: one line, the session stays resumable
            raise LauncherError(f"could not launch {tid}: {type(exc).__name__}: {_first_line(exc)}") from exc
        self._handles[tid] = handle
        st.set_attr(self.study, trial.number, "launched_at_s", round(self.clock.used(), 2))
        self.emit({"type": "trial_started", "trial_id": tid, "params": trial.params,
                   "max_steps": spec.budget.max_steps, "max_seconds": spec.budget.max_seconds,
                   "action": trial.user_attrs.get("action", "fresh"), "parent": trial.user_attrs.get("parent")})
        return handle

    def _pause(self, state: dict[str, Any]) -> dict[str, Any]:
        """Cancel local trials (they re-run on resume); keep Kubernetes ones running."""
        dropped = {}
        for tid, entry in (state.get("running") or {}).items():
            handle = TrialHandle(**entry["handle"]) if entry.get("handle") else None
            if result_or_damaged(trial_dir(self.dir, tid)) is not None:
                continue  # finished: collected on resume
            if handle is not None and handle.backend in ("local", "virtual"):  # a simulated cluster's too
                self.launcher.cancel(handle)
                dropped[tid] = None
        return dropped

    def _stop_at_deadline(self, state: dict[str, Any]) -> dict[str, Any]:
        """At the time budget's end, trials still running are stopped and recorded as failed
        (timeout): the budget holds. Each launch got only the time left, so this is rare."""
        stopped = {}
        for tid, entry in (state.get("running") or {}).items():
            handle = TrialHandle(**entry["handle"]) if entry.get("handle") else None
            if handle is not None and handle.backend != "none":
                self.launcher.cancel(handle)
            message = "stopped at the end of the session's time budget before it finished"
            st.tell_result(self.study, int(entry["number"]), {"status": "failed", "error": {
                "kind": "timeout", "message": message}}, self.metric)
            stopped[tid] = None
        return stopped


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def result_or_damaged(tdir: Path) -> dict[str, Any] | None:
    """The trial's result; a damaged result.json becomes a failed result that says which file."""
    try:
        return read_result(tdir)
    except TrialDirError as exc:
        return failed_result({"trial_id": tdir.name}, "corrupt", str(exc))
