"""Tinker's built-in losses, per token, summed (not averaged) over every token of every datum.

With `logp` the log-probability of `target_tokens[t]` under the model being trained (temperature 1),
`q` the sampler's log-probability of the same token (`logprobs` input), `A` the `advantages` input
and `ratio = exp(logp - q)`:

    cross_entropy       -w * logp                                    (inputs: target_tokens, weights)
    importance_sampling -ratio * A                                   (target_tokens, logprobs, advantages)
    ppo                 -min(ratio * A, clip(ratio, lo, hi) * A)     (same; lo, hi default 0.8, 1.2)
    cispo               -sg(clip(ratio, lo, hi)) * logp * A          (same; sg = stop-gradient)
    dro                 -(logp * A - beta / 2 * (logp - q)^2)        (same; beta default 0.05)

The request's loss is the sum of these over all tokens (positions with A = 0 or w = 0 add nothing),
so a batch split into chunks accumulates exactly the gradient of one call. A caller who wants a
mean (this project's `grpo`/`dapo` aggregations) divides the advantages beforehand: see docs/tinker.md.
`lo`/`hi` come from `loss_fn_config` (`clip_low_threshold`, `clip_high_threshold`) or, per token,
from loss inputs of those names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rl_core.serve.wire import UserError

Inputs = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, Inputs, dict[str, float]], torch.Tensor]


def cross_entropy(logp_T: torch.Tensor, x: Inputs, cfg: dict[str, float]) -> torch.Tensor:
    return -x["weights"] * logp_T


def importance_sampling(logp_T: torch.Tensor, x: Inputs, cfg: dict[str, float]) -> torch.Tensor:
    return -torch.exp(logp_T - x["logprobs"]) * x["advantages"]


def _bounds(x: Inputs, cfg: dict[str, float]) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    lo = x.get("clip_low_threshold", cfg.get("clip_low_threshold", 0.8))
    hi = x.get("clip_high_threshold", cfg.get("clip_high_threshold", 1.2))
    return lo, hi


def _clip(ratio_T: torch.Tensor, lo, hi) -> torch.Tensor:
    lo_T = torch.as_tensor(lo, dtype=ratio_T.dtype, device=ratio_T.device)
    hi_T = torch.as_tensor(hi, dtype=ratio_T.dtype, device=ratio_T.device)
    return torch.minimum(torch.maximum(ratio_T, lo_T), hi_T)


def ppo(logp_T: torch.Tensor, x: Inputs, cfg: dict[str, float]) -> torch.Tensor:
    ratio_T = torch.exp(logp_T - x["logprobs"])
    adv_T = x["advantages"]
    return -torch.minimum(ratio_T * adv_T, _clip(ratio_T, *_bounds(x, cfg)) * adv_T)


def cispo(logp_T: torch.Tensor, x: Inputs, cfg: dict[str, float]) -> torch.Tensor:
    ratio_T = torch.exp(logp_T - x["logprobs"])
    return -_clip(ratio_T, *_bounds(x, cfg)).detach() * logp_T * x["advantages"]


def dro(logp_T: torch.Tensor, x: Inputs, cfg: dict[str, float]) -> torch.Tensor:
    beta = cfg.get("beta", 0.05)
    return -(logp_T * x["advantages"] - 0.5 * beta * (logp_T - x["logprobs"]) ** 2)


_RL_INPUTS = ("target_tokens", "logprobs", "advantages")
_CLIP_KEYS = ("clip_low_threshold", "clip_high_threshold")


class Loss:
    def __init__(self, fn: LossFn, required: tuple[str, ...], optional: tuple[str, ...] = (),
                 config: tuple[str, ...] = ()) -> None:
        self.fn, self.required, self.optional, self.config = fn, required, optional, config


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss(cross_entropy, ("target_tokens", "weights")),
    "importance_sampling": Loss(importance_sampling, _RL_INPUTS),
    "ppo": Loss(ppo, _RL_INPUTS, _CLIP_KEYS, _CLIP_KEYS),
    "cispo": Loss(cispo, _RL_INPUTS, _CLIP_KEYS, _CLIP_KEYS),
    "dro": Loss(dro, _RL_INPUTS, config=("beta",)),
}


def resolve(name: str, config: dict[str, float]) -> Loss:
    """The loss called `name`, after checking its config; unknown names and keys are UserErrors."""
    loss = LOSSES.get(name)
    if loss is None:
        raise UserError(f"loss_fn {name!r} is not supported by this server: use one of {', '.join(LOSSES)} "
                        "(gspo, stable_reinforce and custom losses are not implemented)")
    unknown = sorted(set(config) - set(loss.config))
    if unknown:
        accepted = ", ".join(loss.config) or "none"
        raise UserError(f"loss_fn_config keys {unknown} do not apply to {name!r} (accepted: {accepted})")
    return loss


def check_inputs(loss: Loss, name: str, index: int, length: int, inputs: dict) -> None:
    missing = [k for k in loss.required if k not in inputs]
    if missing:
        raise UserError(f"datum {index}: loss {name!r} needs loss_fn_inputs {list(loss.required)}; missing {missing}")
    extra = sorted(set(inputs) - set(loss.required) - set(loss.optional))
    if extra:
        raise UserError(f"datum {index}: loss {name!r} does not read loss_fn_inputs {extra}")
    for key, value in inputs.items():
        if len(value) != length:
            raise UserError(f"datum {index}: loss_fn_inputs[{key!r}] has {len(value)} values for "
                            f"{length} input tokens (one per input position is required)")
