"""Changes to the spec's defaults for a kind of model: the pretrained-model preset.

Written in the spec's own terms (`rl_core.spec` field paths and `Search` ranges); the search space
(`tools.search_space`) applies it for any model the policy loader does not build itself. Torch-free,
like the spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rl_core.spec import Search


@dataclass(frozen=True)
class Preset:
    """Changes to the defaults for a kind of model: fixed values (dotted paths) and search ranges."""

    fixed: dict[str, Any]
    search: dict[str, Search]
    why: str


# A pretrained checkpoint (gemma-3-270m, a GGUF, a local HF directory) instead of the tiny built-in
# policy: the recipe of examples/gemma-270m-trial.json (docs/gemma.md), whose 40 minutes of GRPO
# raised gemma-3-270m's greedy test accuracy over its warm start by +10.5 +- 2.2 and +16.5 +- 2.3
# points paired (two seeds, n=400) on 2 cores. LoRA r16, never full fine-tuning (268M parameters and a
# 262k vocabulary on CPU); 40 supervised steps on gold SQL first (the answer format; they leave
# failures sampling can fix); lr 3e-5 after 5 warm-up steps (on dev, from the same warm start, 1e-4
# drifted and lost 3 points in 40 steps where 3e-5 gained 16; 2e-4 made the drift KL spike); 2 prompts
# x 8 completions at T 0.9 (a third of the groups mixed); KL 0.01 to the warm start; 2 candidate
# batches of dynamic sampling; a small shaping reward for SQL that runs; 48 new tokens cover the
# built-in gold SQL; ~120 steps (2,400 s at ~20 s a step); 60 dev questions per evaluation (~80 s).
PRESETS: dict[str, Preset] = {
    "pretrained": Preset(
        fixed={"hparams.sft_steps": 40, "hparams.sft_learning_rate": 2e-4, "hparams.sft_batch_size": 8,
               "hparams.max_new_tokens": 48, "hparams.warmup_steps": 5, "hparams.sampling_rounds": 2,
               "eval.limit": 60},
        search={"learning_rate": Search(1e-5, 2e-4, log=True, start=3e-5),
                "lora_rank": Search(choices=(8, 16, 32), start=16),
                "group_size": Search(choices=(4, 8), start=8), "prompts_per_step": Search(choices=(2, 4, 8), start=2),
                "temperature": Search(0.5, 1.1, start=0.9),
                "kl_beta": Search(choices=(0.0, 0.001, 0.01, 0.04), start=0.01),
                "reward_executes": Search(0.0, 0.3, start=0.1),
                "max_steps": Search(20, 160, step=20, start=120)},
        why="docs/gemma.md"),
}


def preset_for(model: str) -> str | None:
    """`pretrained` for anything the policy loader does not build itself (its built-ins are exactly
    the `builtin:` names), else None."""
    return None if model.startswith("builtin:") else "pretrained"
