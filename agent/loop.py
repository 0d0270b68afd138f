"""The research loop's steps: propose, launch, collect, reflect (wired in agent/graph.py).

Crash safety comes from one rule: the Optuna study is the ground truth and every step is
idempotent against it. `propose` first asks any proposal already enqueued (a crash between enqueue
and ask); `launch` treats every RUNNING study trial the loop does not track as an orphan and
re-attaches it, collects it (result.json present) or launches it (again); `collect` tells each
trial once (tell_result ignores a trial already told). So `kill -9` at any moment loses no
finished trial and counts none twice.

The steps live along their seams: proposing, the clock and `decide` here; launching, adopting,
pausing and stopping in agent/launching.py; collecting, pruning and telling in agent/collecting.py.

Pause: new launches stop; local trials still running are cancelled and re-run from the start on
resume (the launcher cannot move a running process to a new agent, and the trial's own checkpoints
are the runner's business); Kubernetes trials keep running and are collected on resume.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from agent import budget as bd
from agent import study as st
from agent.collecting import Collecting
from agent.launching import Launching
from agent.lineage import checked, parent_init, trial_spec
from agent.plan import Plan
from agent.planners.base import Clock, Planner, PlanningContext
from agent.session import pause_requested, save_round
from cluster.base import Launcher
from rl_core.sessiondir import trial_dir
from rl_core.spec import SpecError
from rl_core.trialdir import METRICS_FILE, read_jsonl, result_metrics
from tools.leaderboard import trial_rows
from tools.search_space import SearchSpace
from tools.trials import summarize_trial

Emit = Callable[[dict[str, Any]], None]


class Research(Launching, Collecting):
    """The dependencies and step functions of one session's loop: proposing, the clock and the
    decision of what comes next here; launching (agent/launching.py) and collecting
    (agent/collecting.py) mixed in."""

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
        self.time = bd.Timekeeper(self.dir, self.c, now=getattr(launcher, "virtual_now", None))
        self.clock = self.time.clock
        self.branching = self.c.branching

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
                                  clock=self.planning_clock(),
                                  running=[{"trial_id": st.trial_id_of(t), "params": t.params,
                                            "parent": t.user_attrs.get("parent"),
                                            "action": t.user_attrs.get("action", "fresh"),
                                            "screened": t.user_attrs.get("screened"),
                                            "sft_steps": t.user_attrs.get("sft_steps")} for t in running])
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
                    "proposed": sorted(p.params), "action": p.action, "parent": p.parent,
                    "screened": p.screened, "max_steps": p.max_steps, "sft_steps": p.sft_steps})
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

    # --- specs ---------------------------------------------------------------------------------
    def _spec(self, trial: Any, max_seconds: float | None = None) -> Any:
        parent, action = trial.user_attrs.get("parent"), trial.user_attrs.get("action", "fresh")
        init = parent_init(self.dir, parent, action, trial.params) if parent else None
        return trial_spec(self.space, self.c, self.session, st.trial_id_of(trial), trial.params,
                          number=trial.number, init_from=init, max_seconds=max_seconds,
                          eval_seconds=self.time.overhead(self._results()) if self.c.budget_minutes else None,
                          screen_every=self.c.screen_steps if trial.user_attrs.get("screened") else None,
                          max_steps=trial.user_attrs.get("max_steps"), sft_steps=trial.user_attrs.get("sft_steps"))

    def spec_for(self, trial: Any) -> Any:
        try:
            return self._spec(trial)
        except SpecError:
            return None

    # --- time ------------------------------------------------------------------------------------
    def _results(self) -> list[dict[str, Any]]:
        """The metrics of finished trials: what the time budget's estimates are measured on."""
        return [{"metrics": _observed(t.user_attrs),
                 "child": bool(t.user_attrs.get("parent")) and not t.user_attrs.get("sft_steps")}
                for t in st.by_state(self.study, TrialState.COMPLETE) if t.user_attrs.get("metrics")]

    def planning_clock(self) -> Clock:
        """What the planners see of the budget: time left, what a launch gets, what a trial costs."""
        results = self._results()
        measured = [result_metrics(r) for r in results]
        per_step = [m.train_s / m.steps for m in measured if m.train_s and m.steps]
        left = self.time_left()
        explore = None
        if self.c.budget_minutes:
            explore = max(0.0, self.c.explore_share * self.c.budget_minutes * 60 - self._challenger_s())
        return Clock(time_left_s=None if left == float("inf") else max(0.0, left),
                     launch_s=self._launch_seconds(), overhead_s=self.time.overhead(results),
                     step_s=statistics.median(per_step) if per_step else None, slots=self.c.parallel,
                     screen_steps=self.c.screen_steps, explore_s=explore, sft_step_s=bd.sft_step_s(self.c.model))

    def _challenger_s(self) -> float:
        """Seconds challengers (screened branches) took from the line so far, stopped ones included:
        their whole wall time (loading, a supervised stage, screens), not only their GRPO steps."""
        total = 0.0
        for trial in self.study.get_trials(deepcopy=False):
            if trial.user_attrs.get("screened") and trial.user_attrs.get("action") == "branch":
                metrics = trial.user_attrs.get("metrics") or {}
                rows = read_jsonl(trial_dir(self.dir, st.trial_id_of(trial)) / METRICS_FILE)
                total += float(metrics.get("wall_s") or (rows[-1].get("elapsed_s") if rows else 0.0) or 0.0)
        return total

    def time_left(self) -> float:
        return self.time.time_left(self._results())

    def _can_launch(self) -> bool:
        return not self.c.budget_minutes or self._launch_seconds() is not None

    def _launch_seconds(self) -> float | None:
        """GRPO seconds a trial launched now gets (None: it could not finish in time)."""
        return self.time.launch_seconds(self._results(), finished=st.counts(self.study)["finished"])

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

    # --- planner inputs ------------------------------------------------------------------------
    def finished_trials(self) -> list[dict[str, Any]]:
        rows = []
        for row in trial_rows(self.dir, self.study):
            if row["status"] in ("succeeded", "failed", "pruned"):
                row["summary"] = summarize_trial(trial_dir(self.dir, row["trial_id"]))
                rows.append(row)
        return rows


def _observed(attrs: dict[str, Any]) -> dict[str, Any]:
    """A trial's metrics with its wall time as the session saw it (submit to collection: process
    start, imports and polling included), when that is longer than the trial's own count: what a
    launch must leave room for."""
    metrics = dict(attrs["metrics"])
    observed = attrs.get("wall_observed_s")
    if observed is not None and observed > (metrics.get("wall_s") or 0.0):
        metrics["wall_s"] = observed
    return metrics
