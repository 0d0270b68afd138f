"""The research loop's steps: propose, launch, collect, reflect (wired in agent/graph.py).

Crash safety comes from one rule: the Optuna study is the ground truth and every step is
idempotent against it. `propose` first asks any proposal already enqueued (a crash between enqueue
and ask); `launch` treats every RUNNING study trial the loop does not track as an orphan and
re-attaches it, collects it (result.json present) or launches it (again); `collect` tells each
trial once (tell_result ignores a trial already told). So `kill -9` at any moment loses no
finished trial and counts none twice.

Pause: new launches stop; local trials still running are cancelled and re-run from the start on
resume (the launcher cannot move a running process to a new agent, and the trial's own checkpoints
are the runner's business); Kubernetes trials keep running and are collected on resume.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from agent import budget as bd
from agent import study as st
from agent.lineage import checked, parent_init, trial_spec
from agent.plan import Plan
from agent.planners.base import Planner, PlanningContext
from agent.session import pause_requested, save_round, update_status
from cluster.base import TERMINAL, Launcher, LauncherError, TrialHandle
from rl_core.sessiondir import trial_dir
from rl_core.spec import SpecError
from rl_core.trialdir import (
    METRICS_FILE,
    TrialDirError,
    failed_result,
    last_jsonl,
    launch_spec,
    read_jsonl,
    read_result,
    was_cancelled,
    write_result,
)
from tools.leaderboard import trial_rows
from tools.search_space import SearchSpace
from tools.trials import eval_points, summarize_trial

Emit = Callable[[dict[str, Any]], None]


class Research:
    """The dependencies and step functions of one session's loop."""

    def __init__(self, *, session_dir: Path, plan: Plan, planner: Planner, launcher: Launcher,
                 emit: Emit | None = None, poll_s: float = 0.5) -> None:
        self.dir = Path(session_dir)
        self.session = self.dir.name
        self.plan = plan
        self.space = SearchSpace.from_json(plan.search_space)
        self.c = plan.constraints
        self.metric = plan.objective.metric
        self.planner = planner
        self.launcher = launcher
        self.emit = emit or (lambda event: None)
        self.poll_s = poll_s
        self.study = st.session_study(self.dir, plan)
        self._forget_paused_runs()
        self._handles = {h.trial_id: h for h in self._reattach()}
        self._progress: dict[str, int] = {}
        self.time = bd.Timekeeper(self.dir, self.c)
        self.clock = self.time.clock
        self.branching = self.c.branching

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
            if was_cancelled(tdir) and _result_or_damaged(tdir) is None:
                shutil.rmtree(tdir)

    # --- propose -------------------------------------------------------------------------------
    def propose(self, state: dict[str, Any]) -> dict[str, Any]:
        t0 = time.monotonic()
        counts = st.counts(self.study)
        free = self.c.parallel - counts["running"]
        budget_left = self.c.trials - sum(counts.values())
        k = max(0, min(free - counts["waiting"], budget_left))
        if k > 0 and not self._can_launch():
            k = 0  # no trial could finish in the time left: the loop winds down
        rnd = int(state.get("round", 0)) + 1
        record: dict[str, Any] = {"round": rnd, "planner": self.planner.name, "proposals": [], "notes": []}
        feedback = list(state.get("feedback") or [])
        if k > 0:
            trials = self.finished_trials()
            running = [t for t in st.by_state(self.study, TrialState.RUNNING)]
            ctx = PlanningContext(goal=self.plan.goal, objective=asdict(self.plan.objective), space=self.space,
                                  round=rnd, k=k, trials=trials, feedback=feedback,
                                  active=[t.params for t in running], branching=self.branching,
                                  running=[{"trial_id": st.trial_id_of(t), "params": t.params,
                                            "parent": t.user_attrs.get("parent"),
                                            "action": t.user_attrs.get("action", "fresh")} for t in running])
            result = self.planner.propose(ctx)
            record.update(planner=result.planner, notes=result.notes, fallback=result.fallback)
            feedback = list(result.notes)
            params_of = {t["trial_id"]: t.get("params") or {} for t in trials}
            for p in result.proposals:
                p, note = checked(self.dir, p, params_of, self.branching)
                if note:
                    feedback.append(note)
                    record["notes"].append(note)
                self.study.enqueue_trial(p.params, user_attrs={
                    "rationale": p.rationale, "round": rnd, "planner": result.planner,
                    "proposed": sorted(p.params), "action": p.action, "parent": p.parent})
        asked = []
        for _ in range(min(free, counts["waiting"] + k)):
            trial = st.ask(self.study, self.space.distributions())
            spec = self.spec_for(trial)
            asked.append({"trial_id": st.trial_id_of(trial), "params": trial.params,
                          "reward": spec.reward.components if spec else {}, "rationale": trial.user_attrs.get("rationale", ""),
                          "planner": trial.user_attrs.get("planner", "optuna"),
                          "action": trial.user_attrs.get("action", "fresh"), "parent": trial.user_attrs.get("parent")})
        record["proposals"] = asked
        if asked or k:
            save_round(self.dir, record)
            self.emit({"type": "round", "round": rnd, "planner": record["planner"], "fallback": record.get("fallback"),
                       "notes": record["notes"], "proposals": asked})
        self.clock.save(force=True)
        return {"round": rnd if (asked or k) else state.get("round", 0), "feedback": feedback,
                "active_s": time.monotonic() - t0}

    # --- launch --------------------------------------------------------------------------------
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
        if _result_or_damaged(trial_dir(self.dir, tid)) is not None:
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
        self.emit({"type": "trial_started", "trial_id": tid, "params": trial.params,
                   "max_steps": spec.budget.max_steps, "max_seconds": spec.budget.max_seconds,
                   "action": trial.user_attrs.get("action", "fresh"), "parent": trial.user_attrs.get("parent")})
        return handle

    def _spec(self, trial: Any, max_seconds: float | None = None) -> Any:
        parent, action = trial.user_attrs.get("parent"), trial.user_attrs.get("action", "fresh")
        init = parent_init(self.dir, parent, action) if parent else None
        return trial_spec(self.space, self.c, self.session, st.trial_id_of(trial), trial.params,
                          number=trial.number, init_from=init, max_seconds=max_seconds,
                          eval_seconds=self.time.overhead(self._results()) if self.c.budget_minutes else None)

    def spec_for(self, trial: Any) -> Any:
        try:
            return self._spec(trial)
        except SpecError:
            return None

    # --- time ------------------------------------------------------------------------------------
    def _results(self) -> list[dict[str, Any]]:
        """The metrics of finished trials: what the time budget's estimates are measured on."""
        return [{"metrics": t.user_attrs["metrics"]} for t in st.by_state(self.study, TrialState.COMPLETE)
                if t.user_attrs.get("metrics")]

    def time_left(self) -> float:
        return self.time.time_left(self._results())

    def _can_launch(self) -> bool:
        return not self.c.budget_minutes or self._launch_seconds() is not None

    def _launch_seconds(self) -> float | None:
        """GRPO seconds a trial launched now gets (None: it could not finish in time)."""
        return self.time.launch_seconds(self._results(), finished=st.counts(self.study)["finished"])

    # --- collect -------------------------------------------------------------------------------
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
        self.clock.save(force=True)
        return {"running": {tid: None for tid in done}, "finished": sorted(done),
                "active_s": time.monotonic() - t0}

    def _check(self, tid: str, entry: dict[str, Any]) -> tuple[int, dict[str, Any] | None] | None:
        number = int(entry["number"])
        tdir = trial_dir(self.dir, tid)
        handle = TrialHandle(**entry["handle"]) if entry.get("handle") else None
        status = self.launcher.status(handle) if handle and handle.backend != "none" else None
        result = _result_or_damaged(tdir)
        if result is None and status in TERMINAL:
            result = self.launcher.result(handle) or {"status": "failed", "error": {
                "kind": "crash", "message": f"the launcher reports the trial {status} and it left no result.json"}}
        if result is not None:
            return number, result
        self._report_progress(tid, tdir)
        if self._should_prune(tid, number, tdir):
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

    def _finish(self, tid: str, number: int, result: dict[str, Any] | None) -> None:
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

    # --- reflect -------------------------------------------------------------------------------
    def reflect(self, state: dict[str, Any]) -> dict[str, Any]:
        """Decide what comes next; on a stop, record it (and pause local trials)."""
        decision = self.decide(state)
        if decision not in ("paused", "goal met", "trial budget spent", "time budget spent"):
            return {"next": decision}
        if decision == "paused":
            return {"next": "end", "stop_reason": "paused", "running": self._pause(state)}
        return {"next": "end", "stop_reason": decision, "running": self._stop_at_deadline(state)}

    def decide(self, state: dict[str, Any]) -> str:
        counts = st.counts(self.study)
        orphans = counts["running"] > len(state.get("running") or {})
        target = self.plan.objective.target
        best = st.best_value(self.study)
        goal_met = target is not None and best is not None and best >= target
        time_left = self.time_left()
        out_of_time = time_left <= 0 or not self._can_launch()
        if pause_requested(self.dir):
            return "paused"
        trials, running = self.c.trials, counts["running"]
        if counts["finished"] >= trials:
            return "trial budget spent"
        if orphans:
            return "launch"
        stop_launching = goal_met or out_of_time
        if (running == 0 and stop_launching) or time_left <= 0:
            return "goal met" if goal_met else "time budget spent"
        if not stop_launching and running < self.c.parallel and counts["finished"] + running < trials:
            return "propose"
        return "collect" if running else "trial budget spent"

    def _pause(self, state: dict[str, Any]) -> dict[str, Any]:
        """Cancel local trials (they re-run on resume); keep Kubernetes ones running."""
        dropped = {}
        for tid, entry in (state.get("running") or {}).items():
            handle = TrialHandle(**entry["handle"]) if entry.get("handle") else None
            if _result_or_damaged(trial_dir(self.dir, tid)) is not None:
                continue  # finished: collected on resume
            if handle is not None and handle.backend == "local":
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

    # --- planner inputs ------------------------------------------------------------------------
    def finished_trials(self) -> list[dict[str, Any]]:
        rows = []
        for row in trial_rows(self.dir, self.study):
            if row["status"] in ("succeeded", "failed", "pruned"):
                row["summary"] = summarize_trial(trial_dir(self.dir, row["trial_id"]))
                rows.append(row)
        return rows


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _result_or_damaged(tdir: Path) -> dict[str, Any] | None:
    """The trial's result; a damaged result.json becomes a failed result that says which file."""
    try:
        return read_result(tdir)
    except TrialDirError as exc:
        return failed_result({"trial_id": tdir.name}, "corrupt", str(exc))


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
