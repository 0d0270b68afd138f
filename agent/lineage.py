"""Trials that build on each other: the spec of a study trial, including where its weights come from.

A planner proposes `fresh` (the base policy), `continue` (a finished trial's final weights, the
same hyperparameters, its optimizer state) or `branch` (a finished trial's final weights with
changed hyperparameters and reward weights, and its trainer state too, as PBT copies it, unless the
branch changes the LoRA shape the optimizer state belongs to). The parent must have succeeded and saved its
weights; anything else is turned into a fresh start with a note the planner reads next round.
The trial tree is recorded three ways: the study trial's user attributes (`action`, `parent`),
the child's spec (`init_from`), and its result (`lineage`: parent, branch step, steps and GRPO
seconds in all).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from agent.plan import Constraints
from agent.planners.base import Proposal
from rl_core.sessiondir import trial_dir
from rl_core.spec import TrialSpec
from rl_core.trialdir import WEIGHTS_DIR, TrialDirError, read_result, result_metrics
from tools.search_space import SearchSpace


def parent_problem(session_dir: Path, parent: str) -> str | None:
    """Why `parent` cannot be branched from, or None when it can."""
    try:
        result = read_result(trial_dir(session_dir, parent))
    except TrialDirError as exc:
        return str(exc)
    if result is None:
        return f"{parent} has not finished"
    if result.get("status") != "succeeded":
        return f"{parent} did not succeed"
    if not result.get("adapter_path") or not (trial_dir(session_dir, parent) / WEIGHTS_DIR).is_dir():
        return f"{parent} saved no weights"
    return None


def checked(session_dir: Path, proposal: Proposal, parent_params: dict[str, dict[str, Any]],
            branching: bool) -> tuple[Proposal, str | None]:
    """The proposal as it will run, and a note when it had to change."""
    if proposal.action == "fresh":
        return proposal, None
    if not branching:
        return Proposal(proposal.params, proposal.rationale), "branching is off in this session: started fresh"
    problem = parent_problem(session_dir, proposal.parent or "")
    if problem is not None:
        return (Proposal(proposal.params, proposal.rationale),
                f"{proposal.action} from {proposal.parent} refused ({problem}): started fresh")
    if proposal.action == "continue":  # unchanged: the parent's own values, whatever was proposed
        # (its screens and length kept: a screened continuation is what its challenger races)
        return dataclasses.replace(proposal, params=dict(parent_params.get(proposal.parent, {}))), None
    return proposal, None


# What the trainable tensors are: a branch that changes one of these cannot reuse the optimizer state.
SHAPE_PARAMS = ("lora_rank", "lora_alpha")


def parent_init(session_dir: Path, parent: str, action: str,
                params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The child's `init_from`: the parent's weights and how much training they carry. A continue,
    and a branch that keeps the parent's LoRA shape (`params`: the branch's values), resume the
    parent's whole trainer state: a challenger races its incumbent from the same state."""
    result = read_result(trial_dir(session_dir, parent)) or {}
    lineage = result.get("lineage") or {}
    metrics = result_metrics(result)
    hparams = (result.get("spec") or {}).get("hparams") or {}
    same_shape = all(k not in (params or {}) or k not in hparams or params[k] == hparams[k] for k in SHAPE_PARAMS)
    return {"trial": parent, "weights": str((trial_dir(session_dir, parent) / WEIGHTS_DIR).resolve()),
            "optimizer": action == "continue" or (action == "branch" and same_shape),
            "step": int(lineage.get("steps_total", metrics.steps or 0)),
            "train_s": float(lineage.get("train_s_total", metrics.train_s or 0.0))}


def trial_spec(space: SearchSpace, constraints: Constraints, session: str, trial_id: str,
               params: dict[str, Any], *, number: int = 0, init_from: dict[str, Any] | None = None,
               max_seconds: float | None = None, eval_seconds: float | None = None,
               screen_every: int | None = None, max_steps: int | None = None,
               sft_steps: int | None = None) -> TrialSpec:
    """The validated spec of one trial: the search-space point, the session's model, data and limits,
    a seed of its own (session seed + trial number, so identical configs are independent runs), and
    for a child its parent's weights (the parent's final evaluation serves as its "before"). A screened
    trial (agent/screen.py) evaluates the fixed dev subset every `screen_every` steps; a challenger
    runs `max_steps` (its screen length) whatever its searched value. `sft_steps`: a supervised stage
    this launch runs before its GRPO steps (a planner's move); a child runs none otherwise, since its
    parent's weights carry any earlier one."""
    c = constraints
    base: dict[str, Any] = {"trial_id": trial_id, "session": session, "model": c.model,
                            "dataset": c.dataset, "seed": c.seed + number}
    if c.eval_limit:
        base["eval.limit"] = c.eval_limit
    if c.eval_every_steps:
        base["eval.every_steps"] = c.eval_every_steps
        base["eval.subset"] = c.eval_subset
    seconds = max_seconds or c.trial_seconds
    if seconds:
        base["budget.max_seconds"] = seconds
    if screen_every:
        base["eval.every_steps"] = screen_every
        base["eval.subset"] = c.eval_subset
    if eval_seconds is not None:
        base["budget.eval_seconds"] = round(eval_seconds, 1)
    if init_from:
        base.update({f"init_from.{k}": v for k, v in init_from.items()})
        base["eval.before"] = False  # the parent's final evaluation is the child's before
        params = {k: v for k, v in params.items() if k != "sft_steps"}
        base["hparams.sft_steps"] = sft_steps or 0  # the parent's weights carry any earlier supervised stage
    elif sft_steps:
        base["hparams.sft_steps"] = sft_steps
        # A continue keeps the parent's warm-up: the trainer restores its schedule position and goes on
    if max_steps:
        params = {**params, "max_steps": max_steps}
        base["budget.max_steps"] = max_steps
    return space.build_spec(params, base=base)
