"""Trials that start from another trial (rl_core.spec.InitFrom): what a child reuses from its
parent and what it records. The weights themselves are loaded by rl_core.policy (`init_weights`).

- The parent's final evaluation is the child's "before" when it covered the same questions (not
  evaluated again).
- The final policy is saved where children can find it (rl_core.trialdir.WEIGHTS_DIR): a LoRA
  adapter names the weights it sits on, so the chain rebuilds the exact policy; plus the trainer's
  final state, from which a `continue` (full or LoRA) goes on exactly.
- The result's lineage: parent, branch step, steps and GRPO seconds the weights carry in all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rl_core import trialdir as td
from rl_core.spec import TrialSpec
from rl_core.stats import paired


def lineage(spec: TrialSpec, metrics: dict[str, Any]) -> dict[str, Any]:
    """Where this trial's policy came from, and the training it carries in all."""
    init = spec.init_from
    return {"parent": init.trial or None, "branch_step": init.step,
            "steps_total": init.step + int(metrics.get("steps") or 0),
            "train_s_total": round(init.train_s + float(metrics.get("train_s") or 0.0), 1)}


def paired_se(before: dict[str, Any] | None, after: dict[str, Any]) -> float | None:
    """The standard error of after - before on the same questions (rl_core.stats.paired)."""
    if not before or not before.get("outcomes") or not after.get("outcomes"):
        return None
    return round(paired(before["outcomes"], after["outcomes"]).se, 4)


def before_from_parent(spec: TrialSpec, dev_ids: list[str], out: Any) -> bool:
    """A child's "before" is its parent's final evaluation when it covered the same questions:
    copy it (marked) instead of evaluating the same weights again. False if it cannot be used."""
    if not spec.init_from.trial:
        return False
    parent_evals = td.read_jsonl(Path(spec.init_from.weights).parent / td.EVAL_FILE)
    final = parent_evals[-1] if parent_evals else None
    if not final or final.get("split") != spec.eval.split or sorted(final.get("outcomes") or {}) != sorted(dev_ids):
        return False
    out.append(td.EVAL_FILE, {**final, "step": 0, "from_parent": spec.init_from.trial, "elapsed_s": 0.0})
    print(f"eval step 0: the parent {spec.init_from.trial}'s final evaluation (same questions)", flush=True)
    return True


OPTIMIZER_FILE = "optimizer.pt"  # the trainer's final state for a `continue` (name kept from when it held only that)


def save_weights(policy: Any, trainer: Any, out: Any) -> None:
    """The final policy other trials may branch from, and what a continuation resumes.

    Full fine-tuning saves the whole model. LoRA saves the adapter and, in
    `policy.ADAPTER_BASE_FILE`, the saved weights it was trained on (its parent's adapter/, itself
    resolved the same way), so a child, a grandchild or a confirmation rebuilds the exact policy
    (`load_policy(init_weights=...)` merges the chain in fp32). Both save the trainer's state at its
    last step (optimizer moments, KL reference, prompt order, schedule position, RNG)."""
    from rl_core.policy import ADAPTER_BASE_FILE

    weights = out.root / td.WEIGHTS_DIR
    if policy.lora_rank > 0:  # only the trainable adapter: stacked ancestors are named by the chain
        policy.model.save_pretrained(weights, selected_adapters=["default"])
    else:
        policy.model.save_pretrained(weights)
    policy.tokenizer.save_pretrained(weights)
    if policy.lora_rank > 0:
        (weights / ADAPTER_BASE_FILE).write_text(json.dumps({"weights": policy.adapter_base}) + "\n")
    state = {k: v for k, v in trainer.state_dict().items() if k != "model"}  # the weights are saved above
    torch.save(state, weights / OPTIMIZER_FILE)


def restore_parent_optimizer(spec: TrialSpec, trainer: Any) -> None:
    """`init_from.optimizer` (a `continue`, or a branch that keeps the LoRA shape): the trainer goes
    on from the parent's final state.
    The policy must hold the parent's own trainable weights (full weights, or with LoRA the parent's
    adapter itself: `load_policy(continue_adapter=True)`)."""
    path = Path(spec.init_from.weights) / OPTIMIZER_FILE if spec.init_from.weights else None
    if not spec.init_from.optimizer or path is None:
        return
    parent_lora = (Path(spec.init_from.weights) / "adapter_config.json").is_file()
    if parent_lora != (spec.hparams.lora_rank > 0) or not path.is_file():
        print("init_from.optimizer: the parent left no trainer state this trial can use (both full "
              "fine-tuning or both LoRA); starting a fresh optimizer", flush=True)
        return
    state = torch.load(path, weights_only=False, map_location="cpu")
    if "step" not in state:  # saved before the whole trainer state was: the optimizer alone
        trainer.optimizer.load_state_dict(state["optimizer"])
    else:
        if spec.hparams.sft_steps:  # after a supervised stage the KL reference is where GRPO starts
            state = {**state, "reference": None}
        trainer.continue_from(state)
    # The loaded state carries the parent's hyperparameters in its param groups; a branch (a
    # challenger) changes some: the child's own go back in (the learning rate is set every step).
    for group in trainer.optimizer.param_groups:
        group["weight_decay"] = spec.hparams.weight_decay
