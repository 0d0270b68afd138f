"""The planner contract: given what the session has learned, propose k trial configs, each with a
short rationale. Params a proposal leaves out are filled by the study's sampler (Optuna) at launch.

Every planner is tested by one conformance suite (tests/agent/test_planner_conformance.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from tools.search_space import SearchSpace

ACTIONS = ("fresh", "continue", "branch")


@dataclass
class Proposal:
    """One trial to run. `fresh` starts from the base policy; `continue` trains the trial `parent`
    further with its hyperparameters unchanged; `branch` starts from `parent`'s saved weights with
    the changed `params` (population-based-training style exploit + explore)."""

    params: dict[str, Any]  # a subset of the search space's parameters, already clamped into range
    rationale: str
    action: str = "fresh"
    parent: str | None = None  # trial_id whose final weights the trial starts from (continue/branch)
    # Screens (agent/screen.py): evaluate the fixed dev subset every `screen_steps`, so a challenger
    # (a branch) and its reference (the continue of the same parent) race at equal steps.
    screened: bool = False
    max_steps: int | None = None  # a challenger's length in steps (None: the trial's usual budget)
    sft_steps: int | None = None  # a supervised stage on gold SQL before this trial's GRPO steps (a line move)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")
        if (self.action == "fresh") != (self.parent is None):
            raise ValueError(f"action {self.action!r} {'needs' if self.action != 'fresh' else 'takes no'} a parent")


@dataclass(frozen=True)
class Clock:
    """What compute is left and what things cost, as the session's budget sees it (agent/budget.py)."""

    time_left_s: float | None  # seconds of the wall-clock budget left for trials (None: no budget)
    launch_s: float | None  # GRPO seconds a trial launched now would get (None: no limit)
    overhead_s: float  # load and evaluations per trial: what a branch, continuation or screen costs on top
    step_s: float | None  # GRPO seconds per step on finished trials (None: none finished yet)
    slots: int  # trials that run at once
    screen_steps: int = 10  # a challenger and its incumbent compare on the dev subset every this many steps
    explore_s: float | None = None  # seconds challengers may still take from the line (None: no limit)
    sft_step_s: float = 0.3  # seconds per supervised step (a prior: agent/budget.py SFT_STEP_S)

    def describe(self) -> str:
        """One line for a planner's prompt."""
        parts = [f"{self.slots} trial(s) run at once"]
        if self.time_left_s is not None:
            parts.append(f"{self.time_left_s:.0f} s of the budget left")
        if self.launch_s is not None:
            steps = f" (~{self.launch_s / self.step_s:.0f} steps at {self.step_s:.1f} s/step)" if self.step_s else ""
            parts.append(f"a trial launched now trains {self.launch_s:.0f} s of GRPO{steps}")
        if self.explore_s is not None and self.slots == 1:
            parts.append(f"challengers may still take {self.explore_s:.0f} s from the leading line")
        parts.append(f"each trial costs ~{self.overhead_s:.0f} s more for loading and evaluation (a branch "
                     "or continuation pays it again; both resume the parent's optimizer, schedule and KL "
                     "reference, unless a branch changes the LoRA shape)")
        return "; ".join(parts)


@dataclass
class PlanningContext:
    goal: str
    objective: dict[str, Any]
    space: SearchSpace
    round: int
    k: int
    # One dict per finished trial: trial_id, round, params, status, score, error, rationale,
    # summary (tools.trials.summarize_trial: curve, evals, samples with failures).
    trials: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)  # what was clamped or rejected last round
    active: list[dict[str, Any]] = field(default_factory=list)  # params of trials running now
    branching: bool = True  # may proposals continue or branch from finished trials
    # One dict per running trial: trial_id, params, action, parent.
    running: list[dict[str, Any]] = field(default_factory=list)
    clock: Clock | None = None  # time left and costs (None outside a session)

    def tried(self, params: dict[str, Any]) -> bool:
        """True if a finished or running trial already used exactly these values."""
        def same(other: dict[str, Any]) -> bool:
            return all(other.get(k) == v for k, v in params.items())
        return any(same(t.get("params", {})) for t in self.trials) or any(same(a) for a in self.active)

    def succeeded(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t.get("status") == "succeeded" and t.get("score") is not None]

    def best(self) -> dict[str, Any] | None:
        done = self.succeeded()
        return max(done, key=lambda t: t["score"]) if done else None


@dataclass
class PlannerResult:
    proposals: list[Proposal]
    planner: str  # the planner that produced them ("offline", "gemini", "offline (fallback)")
    notes: list[str] = field(default_factory=list)  # clamped/rejected values, rules fired
    fallback: str | None = None  # why the configured planner was not used this round


class Planner(Protocol):
    name: str

    def propose(self, ctx: PlanningContext) -> PlannerResult: ...
