"""The session's wall-clock budget: `--budget-minutes N` means the session is done, confirmation and
report included, within N minutes of running time (a pause does not count; the time before a
`kill -9` does).

- `SessionClock` keeps the seconds a session has used in `clock.json`, saved every few seconds, so a
  killed agent loses at most that much of its account on resume.
- `launch_seconds` gives a new trial the GRPO seconds that remain for it: the time left, minus the
  confirmation reserve, minus its evaluation and loading overhead as measured on earlier trials,
  shared among the trials still to run. A trial that cannot get `MIN_TRAIN_S` is not launched.
- `trial_eta_s` is the one estimate of when a running trial stops training (the loop's progress
  events carry it; the live view counts it down).
- `confirm_reserve_s` is what the test-split confirmation (top-k + base, in waves of the parallel
  slots) and the report need at the end.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.plan import Constraints
from rl_core.sessiondir import clock_file
from rl_core.trialdir import TrialDirError, read_json_object, result_metrics, write_json_atomic

MIN_TRAIN_S = 15.0  # a trial with less GRPO time than this teaches nothing worth its evaluation
# Model load + two evaluations, before any trial has measured it: the built-in policies load in
# seconds and evaluate 400 questions in about 20 s on 2 cores; a pretrained 270M model takes minutes.
PRIOR_OVERHEAD_S = {"builtin": 30.0, "pretrained": 180.0}
REPORT_S = 10.0  # writing the report and closing the session
# Seconds per supervised step (docs/grpo-calibration.md: 3.3-4 steps/s for the built-in policy at
# batch 32; docs/gemma.md: 30 steps of gemma-3-270m in 140 s): what a planner's supervised stage costs.
SFT_STEP_S = {"builtin": 0.3, "pretrained": 4.7}


class SessionClock:
    """Seconds of running time a session has used, across restarts."""

    def __init__(self, session_dir: Path, save_every_s: float = 2.0,
                 now: Callable[[], float] | None = None) -> None:
        self.path = clock_file(session_dir)
        self.now = now or time.monotonic  # a launcher's virtual clock may stand in (cluster/virtual.py)
        try:
            self.base = float((read_json_object(self.path) or {}).get("used_s", 0.0))
        except (TrialDirError, TypeError, ValueError):
            self.base = 0.0
        self.t0 = self.now()
        self.save_every_s = save_every_s
        self._saved = 0.0

    def used(self) -> float:
        return self.base + self.now() - self.t0

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._saved >= self.save_every_s:
            write_json_atomic(self.path, {"used_s": round(self.used(), 2)})
            self._saved = now


def sft_step_s(model: str) -> float:
    return SFT_STEP_S["builtin" if model.startswith("builtin:") else "pretrained"]


def prior_s(model: str) -> float:
    return PRIOR_OVERHEAD_S["builtin" if model.startswith("builtin:") else "pretrained"]


def overhead_s(results: list[dict[str, Any]], prior: float = PRIOR_OVERHEAD_S["builtin"]) -> float:
    """Seconds a trial spends outside GRPO steps (loading, supervised stage, evaluations): the
    largest measured on finished trials (a fresh trial evaluates twice, a child once), else a prior."""
    measured = _overheads(results)
    return max(measured) if measured else prior


def eval_job_s(results: list[dict[str, Any]], prior: float = PRIOR_OVERHEAD_S["builtin"]) -> float:
    """One load + one evaluation, the median measured: a child's whole overhead (it loads, evaluates
    once after training, its "before" being its parent's), about half a fresh trial's (it evaluates
    twice). Results without `child` count as fresh. (The largest left sessions ending well short of
    their budget: the base's test evaluation is usually cached and costs far less than a job.)"""
    jobs = [o if r.get("child") else o / 2 for r, o in zip(results, _overheads(results, keep_none=True), strict=True)
            if o is not None]
    return statistics.median(jobs) if jobs else prior / 2


def _overheads(results: list[dict[str, Any]], keep_none: bool = False) -> list[Any]:
    """Seconds outside GRPO steps of each result that measured both its wall and training time
    (`keep_none`: None in place of the others, so the list lines up with `results`)."""
    metrics = [result_metrics(r) for r in results]
    out = [max(0.0, m.wall_s - m.train_s) if m.wall_s is not None and m.train_s is not None else None
           for m in metrics]
    return out if keep_none else [o for o in out if o is not None]


def confirm_reserve_s(results: list[dict[str, Any]], *, top_k: int, parallel: int, seeds: int = 0,
                      seed_train_s: float = 0.0, prior: float = PRIOR_OVERHEAD_S["builtin"]) -> float:
    """Time the end of the session needs: top-k + base test evaluations in waves, retrains, report."""
    if top_k <= 0:
        return REPORT_S
    waves = math.ceil((top_k + 1) / max(1, parallel))
    reserve = waves * eval_job_s(results, prior) + REPORT_S
    if seeds:
        reserve += math.ceil(seeds / max(1, parallel)) * (seed_train_s + overhead_s(results, prior))
    return reserve


def launch_seconds(*, remaining_s: float, overhead: float, planned_s: float | None, trials_left: int,
                   parallel: int) -> float | None:
    """GRPO seconds for the next trial, or None when one cannot finish in the time left: the plan's
    per-trial share (budget x parallel / trials, set when the session was planned), else an equal
    share of what remains among the waves of trials still to run; never more than the time left
    after this trial's own loading and evaluation."""
    if planned_s:
        seconds = planned_s
    else:
        waves = max(1, math.ceil(trials_left / max(1, parallel)))
        seconds = remaining_s / waves - overhead
    seconds = min(seconds, remaining_s - overhead)
    return round(seconds, 1) if seconds >= MIN_TRAIN_S else None


def trial_eta_s(metrics: list[dict[str, Any]], budget: dict[str, Any]) -> float | None:
    """Seconds until a running trial stops training: its step limit at the mean GRPO step time, or
    its time limit, whichever comes first. `budget.max_seconds` counts GRPO step time (`t_step`), not
    the model load, SFT or evaluations, so both limits are measured on that clock (the wall time since
    the start would count the load and the first evaluation against it). None before a step."""
    steps = [m for m in metrics if isinstance(m.get("t_step"), int | float)]
    if not steps:
        return None
    train_s = sum(float(m["t_step"]) for m in steps)
    done = int(steps[-1].get("step") or len(steps))
    max_steps, max_seconds = budget.get("max_steps"), budget.get("max_seconds")
    limits = []
    if max_steps:
        limits.append(max(0, int(max_steps) - done) * train_s / len(steps))
    if max_seconds:
        limits.append(max(0.0, float(max_seconds) - train_s))
    return min(limits) if limits else None


class Timekeeper:
    """A session's budget arithmetic over its clock and its constraints (agent/loop.py asks it)."""

    def __init__(self, session_dir: Path, constraints: Constraints,
                 now: Callable[[], float] | None = None) -> None:
        self.c = constraints
        self.clock = SessionClock(session_dir, now=now)
        self.prior = prior_s(constraints.model)

    def overhead(self, results: list[dict[str, Any]]) -> float:
        return overhead_s(results, self.prior)

    def reserve_s(self, results: list[dict[str, Any]]) -> float:
        return confirm_reserve_s(results, top_k=self.c.confirm_top_k, parallel=self.c.parallel,
                                 seeds=self.c.confirm_seeds,
                                 seed_train_s=self.c.trial_seconds or 0.0, prior=self.prior)

    def time_left(self, results: list[dict[str, Any]]) -> float:
        """Seconds of the wall-clock budget left for trials (the confirmation's reserve taken off)."""
        minutes = self.c.budget_minutes
        if not minutes:
            return float("inf")
        return minutes * 60 - self.clock.used() - self.reserve_s(results)

    def launch_seconds(self, results: list[dict[str, Any]], *, finished: int) -> float | None:
        if not self.c.budget_minutes:
            return self.c.trial_seconds
        return launch_seconds(remaining_s=self.time_left(results), overhead=self.overhead(results),
                              planned_s=self.c.trial_seconds,
                              trials_left=max(1, self.c.trials - finished), parallel=self.c.parallel)
