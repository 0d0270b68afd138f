"""The one-slot line's arithmetic for the offline planner (agent/planners/offline.py): which trial
heads the leading line, whether a supervised stage is still a move, and how long a challenger of a
checkpoint may race (agent/screen.py) in the exploration share and the time left."""

from __future__ import annotations

import dataclasses
from typing import Any

from agent.planners.base import PlanningContext


def line_head(ctx: PlanningContext) -> dict[str, Any] | None:
    """The newest trial of the leading line. It starts at the best trial that is not a challenger
    which lost its race, and follows, from each trial, a challenger that replaced it at the winner
    rule, else its succeeded `continue` (the latest) while that did not fall clearly behind its own
    start (a paired loss of more than 2 SE); a child within the noise of its parent is still the line."""
    done = [t for t in ctx.succeeded() if not _lost_race(t)]
    head = max(done, key=lambda t: t["score"]) if done else None
    while head is not None:
        kids = [t for t in ctx.succeeded() if t.get("parent") == head["trial_id"]]
        winners = [t for t in kids if (t.get("screen") or {}).get("verdict") == "replaces"]
        if winners:
            head = max(winners, key=lambda t: t["screen"]["diff"])
            continue
        children = [t for t in kids if t.get("action") == "continue"]
        if not children:
            return head
        child = max(children, key=lambda t: (t.get("round") or 0, t["trial_id"]))
        gain, se = child.get("gain"), child.get("gain_stderr")
        if gain is not None and se and gain < -2 * se:
            return head
        head = child
    return None


def _lost_race(trial: dict[str, Any]) -> bool:
    """A challenger that did not replace its incumbent (or whose race is not decided yet)."""
    return bool(trial.get("screened")) and trial.get("action") == "branch" and \
        (trial.get("screen") or {}).get("verdict") != "replaces"


SFT_STAGE_STEPS = 100  # about 30 s for the built-in policy: most of the +15-30 points measured


def sft_stage_steps(ctx: PlanningContext) -> int:
    """A supervised stage's length: the prior, cut to a third of the exploration time left."""
    clock = ctx.clock
    if clock is None or clock.explore_s is None:
        return SFT_STAGE_STEPS
    return min(SFT_STAGE_STEPS, int(clock.explore_s / 3 / clock.sft_step_s))


def sft_moves_left(ctx: PlanningContext, head: dict[str, Any]) -> bool:
    """A supervised stage is a move while the line has had none, or each one it had won its race."""
    if "sft_steps" in ctx.space.params or ctx.space.fixed.get("hparams.sft_steps"):
        return False  # the space itself decides the supervised stage (or the recipe has one)
    stages = [t for t in list(ctx.trials) + list(ctx.running) if t.get("sft_steps")]
    return all((t.get("screen") or {}).get("verdict") == "replaces" for t in stages)


def after_continuation(ctx: PlanningContext) -> PlanningContext:
    """The context as the challenger will see it: after the continuation about to run (its GRPO
    time and overhead off the time left), so a continuation is screened only if its race fits."""
    clock = ctx.clock
    if clock is None or clock.time_left_s is None:
        return ctx
    left = clock.time_left_s - (clock.launch_s or 0.0) - clock.overhead_s
    return dataclasses.replace(ctx, clock=dataclasses.replace(clock, time_left_s=left,
                                                              launch_s=min(clock.launch_s or left, left)))


def challenge_steps(ctx: PlanningContext, head: dict[str, Any], sft_steps: int = 0) -> int | None:
    """How many GRPO steps a challenger of the head's checkpoint may run: the head's own steps
    (equal steps), cut to the exploration time left after its loading, evaluations and supervised
    stage, and to the time a launch still gets, in whole screens; None when not even one fits (one
    screen is one paired comparison at equal steps; each further one can stop a loser early)."""
    clock = ctx.clock
    every = clock.screen_steps if clock else 10
    steps = int(head.get("steps") or 0)
    if clock is not None and clock.explore_s is not None:
        if not clock.step_s:
            return None
        spare = clock.explore_s - clock.overhead_s - sft_steps * clock.sft_step_s
        steps = min(steps, int(spare / clock.step_s))
        if clock.launch_s is not None:  # the GRPO seconds a launch now gets
            steps = min(steps, int(clock.launch_s / clock.step_s))
        if clock.time_left_s is not None:  # and its whole run before the budget's end
            spare = clock.time_left_s - clock.overhead_s - sft_steps * clock.sft_step_s
            steps = min(steps, int(spare / clock.step_s))
    steps -= steps % every
    return steps if steps >= every else None
