"""Collecting a session's trials: the part of the research loop (agent/loop.py) that waits for
trials to finish, reports their progress, prunes the ones the median pruner stops, and tells the
study each outcome exactly once (tell_result ignores a trial already told, so a restart never
counts one twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from agent import budget as bd
from agent import screen as sc
from agent import study as st
from agent.launching import result_or_damaged
from agent.plan import Constraints, Plan
from agent.session import pause_requested, update_status
from cluster.base import TERMINAL, Launcher, TrialHandle
from rl_core.sessiondir import trial_dir
from rl_core.trialdir import METRICS_FILE, TrialDirError, last_jsonl, launch_spec, read_jsonl
from tools.trials import eval_points

Emit = Callable[[dict[str, Any]], None]


class Collecting:
    """Collect, prune and tell; mixed into agent.loop.Research, which owns the state below."""

    dir: Path
    plan: Plan
    study: optuna.Study
    launcher: Launcher
    emit: Emit
    metric: str
    poll_s: float
    c: Constraints
    clock: bd.SessionClock
    _progress: dict[str, int]

    def time_left(self) -> float:
        raise NotImplementedError  # Research: seconds of the wall-clock budget left for trials

    def collect(self, state: dict[str, Any]) -> dict[str, Any]:
        """Wait until at least one trial finishes (or a pause / the time budget), then tell them."""
        t0 = time.monotonic()
        running = state.get("running") or {}
        done: dict[str, tuple[int, dict[str, Any] | None]] = {}
        while running:
            for tid, entry in running.items():
                if tid not in done:
                    outcome = self._check(tid, entry)
                    if outcome is not None:
                        done[tid] = outcome
            self.clock.save()
            if done or pause_requested(self.dir) or self.time_left() <= 0:
                break
            time.sleep(self.poll_s)
        for tid, (number, result) in done.items():
            self._finish(tid, number, result)
        if done:
            self._settle_screens()
        self.clock.save(force=True)
        return {"running": {tid: None for tid in done}, "finished": sorted(done),
                "active_s": time.monotonic() - t0}

    def _check(self, tid: str, entry: dict[str, Any]) -> tuple[int, dict[str, Any] | None] | None:
        number = int(entry["number"])
        tdir = trial_dir(self.dir, tid)
        handle = TrialHandle(**entry["handle"]) if entry.get("handle") else None
        status = self.launcher.status(handle) if handle and handle.backend != "none" else None
        result = result_or_damaged(tdir)
        if result is None and status in TERMINAL:
            result = self.launcher.result(handle) or {"status": "failed", "error": {
                "kind": "crash", "message": f"the launcher reports the trial {status} and it left no result.json"}}
        if result is not None:
            return number, result
        self._report_progress(tid, tdir)
        if self._screened_out(tid, number) or self._should_prune(tid, number, tdir):
            if handle is not None:
                self.launcher.cancel(handle)
            return number, None
        return None

    def _report_progress(self, tid: str, tdir: Path) -> None:
        line = last_jsonl(tdir / METRICS_FILE)
        if not line or line.get("step") == self._progress.get(tid):
            return
        step = int(line.get("step", 0))
        self._progress[tid] = step
        budget = _launch_budget(tdir)
        eta = bd.trial_eta_s(read_jsonl(tdir / METRICS_FILE), budget)
        self.emit({"type": "trial_progress", "trial_id": tid, "step": step, "max_steps": budget.get("max_steps"),
                   "reward": line.get("reward_mean"), "eta_s": eta})

    def _should_prune(self, tid: str, number: int, tdir: Path) -> bool:
        """Median pruning on intermediate dev evals. Only evals the plan asked for (every
        `eval_every_steps`) and before the last step count: the final eval is written just before
        result.json, and a finished trial must be collected, never cancelled."""
        every = self.c.eval_every_steps
        if self.plan.pruner == "none" or every <= 0:
            return False
        max_steps = _launch_budget(tdir).get("max_steps") or 0
        offset = _branch_step(tdir)  # a child is compared with the others at its cumulative step
        for step, accuracy in eval_points(tdir):
            if 0 < step < max_steps and step % every == 0 and \
                    st.report_eval(self.study, number, offset + step, accuracy):
                return True
        return False

    # --- screens (agent/screen.py): a challenger races the incumbent at equal steps -------------------
    def _rows(self) -> list[dict[str, Any]]:
        return [{"trial_id": st.trial_id_of(t), "number": t.number, "state": t.state,
                 "action": t.user_attrs.get("action", "fresh"), "parent": t.user_attrs.get("parent"),
                 "screened": bool(t.user_attrs.get("screened"))} for t in self.study.get_trials(deepcopy=False)]

    def _standing(self, me: dict[str, Any], rows: list[dict[str, Any]]) -> sc.Screen | None:
        """A screened challenger against its reference now (None: no reference or no common step)."""
        ref = sc.reference_of(rows, me) if me["screened"] else None
        if ref is None:
            return None
        mine, ref_dir = trial_dir(self.dir, me["trial_id"]), trial_dir(self.dir, ref["trial_id"])
        done = me["state"] != TrialState.RUNNING
        ref_steps = sc.subset_outcomes(ref_dir)
        my_steps = sc.subset_outcomes(mine)
        final = done and (ref["state"] != TrialState.RUNNING or max(ref_steps, default=0) >= max(my_steps, default=0))
        rivals = []
        for other in rows:
            if other is not me and other["screened"] and other["action"] == "branch" and \
                    other["parent"] == me["parent"] and other["state"] != TrialState.RUNNING:
                found = sc.race(trial_dir(self.dir, other["trial_id"]), ref_dir)
                if found:
                    rivals.append(found[1])
        return sc.screen(mine, ref_dir, ref["trial_id"], finished=final, rivals=rivals)

    def _screened_out(self, tid: str, number: int) -> bool:
        """Stop a running challenger at the screen where it trails its incumbent by more than 1 SE."""
        trial = st.find(self.study, number)
        if trial is None or not trial.user_attrs.get("screened") or trial.user_attrs.get("action") != "branch":
            return False
        rows = self._rows()
        me = next((r for r in rows if r["number"] == number), None)
        found = self._standing(me, rows) if me else None
        if found is None or found.verdict != sc.STOPPED:
            return False
        sc.record(self.dir, tid, found)
        self.emit({"type": "screen", "trial_id": tid, **found.to_json(), "message": found.describe()})
        return True

    def _settle_screens(self) -> None:
        """Final verdicts for finished challengers whose race is decided (the reference may finish
        after its challenger when they run side by side)."""
        recorded = sc.load(self.dir)
        rows = self._rows()
        for me in rows:
            if me["state"] != TrialState.COMPLETE or me["action"] != "branch" or not me["screened"] or \
                    (recorded.get(me["trial_id"]) or {}).get("verdict") in sc.FINAL:
                continue
            found = self._standing(me, rows)
            if found is not None and found.verdict in sc.FINAL:
                sc.record(self.dir, me["trial_id"], found)
                self.emit({"type": "screen", "trial_id": me["trial_id"], **found.to_json(),
                           "message": found.describe()})

    def _finish(self, tid: str, number: int, result: dict[str, Any] | None) -> None:
        launched = (getattr(st.find(self.study, number), "user_attrs", None) or {}).get("launched_at_s")
        if launched is not None:  # from submit to collection, as the session's clock saw it
            st.set_attr(self.study, number, "wall_observed_s", round(self.clock.used() - launched, 2))
        if result is None:
            told = "pruned" if st.tell_pruned(self.study, number, self._progress.get(tid, 0)) else None
        else:
            told = st.tell_result(self.study, number, result, self.metric)
        if told is None:
            return  # already told before a restart
        trial = st.find(self.study, number)
        self.emit({"type": "trial_finished", "trial_id": tid, "status": told,
                   "score": trial.value if trial is not None and told == "succeeded" else None,
                   "error": (result or {}).get("error")})
        if told == "failed":
            self._surface_failures()

    def _surface_failures(self) -> None:
        groups = st.repeated_failures(self.study)
        if not groups:
            return
        update_status(self.dir, repeated_failures=groups)
        for sig, group in groups.items():
            self.emit({"type": "repeated_failure", "signature": sig, **group})


def _launch_budget(tdir: Path) -> dict[str, Any]:
    try:
        return launch_spec(tdir).get("budget") or {}
    except TrialDirError:
        return {}


def _branch_step(tdir: Path) -> int:
    try:
        return int((launch_spec(tdir).get("init_from") or {}).get("step") or 0)
    except TrialDirError:
        return 0
