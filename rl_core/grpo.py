"""GRPO math: advantages, the clipped policy-gradient loss, k3 KL and loss aggregation.

The exact algorithm (one training step; the loop lives in rl_core/trainer.py):

1. For each of P prompts sample G completions o_1..o_G at temperature T from pi_old.
2. Score each completion with the environment: reward r_i (a weighted sum of components).
3. Advantages, one per completion and shared by all of its tokens:
       A_i = r_i - mean_j(r_j)                    (scale_rewards=False, the default)
       A_i = (r_i - mean_j(r_j)) / (std_j(r_j) + 1e-4)   (scale_rewards=True, the GRPO paper)
   Groups whose advantages are all zero carry no signal and are dropped before the update.
4. Per token t of completion i, with logp the log-probability of the sampled token under the
   *tempered* policy softmax(logits / T) (the distribution actually sampled):
       ratio = exp(logp - logp_old)
       pg    = -min(ratio * A_i, clip(ratio, 1 - eps_low, 1 + eps_high) * A_i)
       kl    = exp(logp_ref - logp) - (logp_ref - logp) - 1          (k3 estimator, >= 0)
       H     = -sum_v p_v log p_v over the tempered softmax            (the token's entropy)
       l_t   = pg + kl_beta * kl - entropy_coef * H
5. Aggregate l_t over the batch with one of LOSSES (masking padding):
       grpo    : mean over the tokens of each sequence, then mean over sequences (the paper)
       dr_grpo : sum over all tokens / (num sequences * max_new_tokens)   (Dr. GRPO)
       dapo    : sum over all tokens / number of tokens                     (DAPO token-level)
   Normalisers count the whole batch, not the micro-batch, so gradient accumulation gives the
   same gradient as one big batch.
6. Repeat the update ppo_epochs times on the same samples (one optimizer step per epoch).

Departures from the papers:
- logp_old is not a separate forward pass: the first epoch runs before any optimizer step, so
  its own detached log-probs are exactly pi_old (ratio 1); later epochs reuse them. Rollouts come
  from `generate` with a KV cache; its log-probs agree with the training forward to ~1e-6.
- Log-probs are those of the full tempered softmax: with top_p < 1 they ignore the nucleus that
  sampling used (as TRL does), so a truncated token's probability is not renormalised.
- Every log-prob forward runs with dropout off (LoRA dropout included), as sampling did.
- Clip-higher (separate eps_low/eps_high) comes from DAPO; the DAPO overlong penalty and the
  Dr. GRPO removal of std scaling are options (scale_rewards), not fixed.
- No KL by default (kl_beta=0): with kl_beta=0 the reference forward is skipped entirely.
- No entropy bonus by default (entropy_coef=0); with it, the entropy comes from the same head
  forward as the log-probs and carries a gradient (it is aggregated like the rest of l_t).
- The KL reference is the policy the first GRPO step starts from (after a supervised stage or a
  parent trial's weights), not the pre-trained base, so KL is 0 before the first step; it is
  a snapshot of the trainable weights, swapped in for the reference forward and checkpointed.
- Log-probs come from the final hidden states through the LM head one chunk of rows at a time,
  checkpointed (`head_log_probs`), so full-vocabulary logits for the whole batch never exist at
  once, forward or backward; this is what lets Gemma's 262k vocabulary fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint


def group_advantages(rewards_PG: torch.Tensor, scale: bool = False, eps: float = 1e-4) -> torch.Tensor:
    """Reward minus its group mean (optionally over the group std); one group per row."""
    centred_PG = rewards_PG - rewards_PG.mean(dim=1, keepdim=True)
    if scale:
        centred_PG = centred_PG / (rewards_PG.std(dim=1, keepdim=True) + eps)
    return centred_PG


def mixed_groups(rewards_PG: torch.Tensor) -> torch.Tensor:
    """Boolean mask of groups whose rewards differ (the only ones with a learning signal)."""
    return (rewards_PG.max(dim=1).values - rewards_PG.min(dim=1).values) > 1e-8


def selective_log_softmax(logits_BTV: torch.Tensor, tokens_BT: torch.Tensor, chunk_rows: int = 4096
                          ) -> torch.Tensor:
    """log softmax(logits)[token] per position, materialising fp32 logits one chunk at a time."""
    flat_NV = logits_BTV.reshape(-1, logits_BTV.shape[-1])
    flat_tokens_N = tokens_BT.reshape(-1)
    out = []
    for start in range(0, flat_NV.shape[0], chunk_rows):
        rows_CV = flat_NV[start:start + chunk_rows].float()
        picked_C = rows_CV.gather(1, flat_tokens_N[start:start + chunk_rows, None]).squeeze(1)
        out.append(picked_C - torch.logsumexp(rows_CV, dim=-1))
    return torch.cat(out).reshape(tokens_BT.shape)


def head_log_probs(hidden_BCH: torch.Tensor, head: torch.nn.Module, tokens_BC: torch.Tensor, *,
                   temperature: float, softcap: float | None = None, chunk_rows: int = 1024,
                   with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log-probs of `tokens` (and optionally entropies) straight from final hidden states.

    The LM head runs one chunk of rows at a time under activation checkpointing: neither the
    forward nor the backward ever holds (rows x vocabulary) logits for more than one chunk, so a
    262k-vocabulary Gemma trains on long batches. Same maths as `selective_log_softmax` on
    softcap(head(h)) / temperature.
    """
    flat_NH = hidden_BCH.reshape(-1, hidden_BCH.shape[-1])
    flat_N = tokens_BC.reshape(-1)

    def chunk_logits(h_CH: torch.Tensor) -> torch.Tensor:
        logits_CV = head(h_CH).float()
        if softcap:
            logits_CV = torch.tanh(logits_CV / softcap) * softcap
        return logits_CV / temperature

    def chunk_logp(h_CH: torch.Tensor, t_C: torch.Tensor) -> torch.Tensor:
        logits_CV = chunk_logits(h_CH)
        return logits_CV.gather(1, t_C[:, None]).squeeze(1) - torch.logsumexp(logits_CV, dim=-1)

    logps, ents = [], []
    for start in range(0, flat_NH.shape[0], chunk_rows):
        h_CH, t_C = flat_NH[start:start + chunk_rows], flat_N[start:start + chunk_rows]
        if h_CH.requires_grad:
            logps.append(torch.utils.checkpoint.checkpoint(chunk_logp, h_CH, t_C, use_reentrant=False))
        else:
            logps.append(chunk_logp(h_CH, t_C))
        if with_entropy:
            with torch.no_grad():
                logp_CV = F.log_softmax(chunk_logits(h_CH), dim=-1)
                ents.append(-(logp_CV.exp() * logp_CV).sum(-1))
    logp_BC = torch.cat(logps).reshape(tokens_BC.shape)
    return logp_BC, (torch.cat(ents).reshape(tokens_BC.shape) if with_entropy else None)


def masked_head_log_probs(hidden_BCH: torch.Tensor, head: torch.nn.Module, tokens_BC: torch.Tensor,
                          mask_BC: torch.Tensor, *, temperature: float, softcap: float | None = None,
                          chunk_rows: int = 1024, keep_logits_bytes: int = 1 << 30,
                          with_entropy: bool = False, entropy_grad: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`head_log_probs` with the LM head only where a loss reads a log-prob (mask 1), one head
    forward per call (the entropy comes from the same logits), and no recompute when the fp32
    logits of all those rows fit in `keep_logits_bytes`. Padding rows get log-prob 0 (and entropy 0).
    `entropy_grad`: the entropy carries a gradient (an entropy bonus in the loss), else diagnostics only.

    Against `head_log_probs` on a padded batch of 8 x 64: about half the rows, and 2 head
    matmuls per epoch instead of 3-4 (forward, entropy forward, checkpoint recompute, backward).
    """
    flat_NH = hidden_BCH.reshape(-1, hidden_BCH.shape[-1])
    rows_R = mask_BC.reshape(-1).nonzero().squeeze(1)
    h_RH, t_R = flat_NH[rows_R], tokens_BC.reshape(-1)[rows_R]
    vocab = head.weight.shape[0]
    recompute = h_RH.requires_grad and h_RH.shape[0] * vocab * 4 > keep_logits_bytes

    def chunk(h_CH: torch.Tensor, t_C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits_CV = head(h_CH).float()
        if softcap:
            logits_CV = torch.tanh(logits_CV / softcap) * softcap
        logits_CV = logits_CV / temperature
        lse_C = torch.logsumexp(logits_CV, dim=-1)
        ent_C = None
        if with_entropy:
            with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):  # H = lse - sum(p * logits)
                ent_C = lse_C - (torch.softmax(logits_CV, dim=-1) * logits_CV).sum(-1)
        return logits_CV.gather(1, t_C[:, None]).squeeze(1) - lse_C, ent_C

    logps, ents = [], []
    for start in range(0, h_RH.shape[0], chunk_rows):
        h_CH, t_C = h_RH[start:start + chunk_rows], t_R[start:start + chunk_rows]
        logp_C, ent_C = (torch.utils.checkpoint.checkpoint(chunk, h_CH, t_C, use_reentrant=False) if recompute
                         else chunk(h_CH, t_C))
        logps.append(logp_C)
        ents.append(ent_C)
    logp_R = torch.cat(logps) if logps else h_RH.new_zeros(0, dtype=torch.float32)
    logp_BC = logp_R.new_zeros(flat_NH.shape[0]).index_copy(0, rows_R, logp_R).reshape(tokens_BC.shape)
    if not with_entropy:
        return logp_BC, None
    ent_R = torch.cat(ents) if ents else logp_R.new_zeros(0)
    return logp_BC, ent_R.new_zeros(flat_NH.shape[0]).index_copy(0, rows_R, ent_R).reshape(tokens_BC.shape)


@torch.no_grad()
def entropy_per_token(logits_BTV: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor:
    """Entropy of the (already tempered) policy at each position; diagnostics only, no grad."""
    flat_NV = logits_BTV.reshape(-1, logits_BTV.shape[-1])
    out = []
    for start in range(0, flat_NV.shape[0], chunk_rows):
        logp_CV = F.log_softmax(flat_NV[start:start + chunk_rows].float(), dim=-1)
        out.append(-(logp_CV.exp() * logp_CV).sum(-1))
    return torch.cat(out).reshape(logits_BTV.shape[:-1])


def k3_kl(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || ref) per token: unbiased and never negative."""
    delta_BT = ref_logp_BT - logp_BT
    return torch.exp(delta_BT) - delta_BT - 1


def clipped_pg_loss(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, adv_B: torch.Tensor,
                    eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO loss with clip-higher, and a 0/1 tensor marking tokens where the clip bound."""
    ratio_BT = torch.exp(logp_BT - old_logp_BT)
    adv_BT = adv_B[:, None]
    unclipped_BT = ratio_BT * adv_BT
    clipped_BT = torch.clamp(ratio_BT, 1 - eps_low, 1 + eps_high) * adv_BT
    loss_BT = -torch.minimum(unclipped_BT, clipped_BT)
    was_clipped_BT = (clipped_BT < unclipped_BT).float()
    return loss_BT, was_clipped_BT


@dataclass(frozen=True)
class BatchSizes:
    """Whole-batch counts so micro-batch losses sum to the full-batch loss."""

    sequences: int
    tokens: int
    max_new_tokens: int


Aggregator = Callable[[torch.Tensor, torch.Tensor, BatchSizes], torch.Tensor]


def grpo_aggregate(loss_BT: torch.Tensor, mask_BT: torch.Tensor, sizes: BatchSizes) -> torch.Tensor:
    per_seq_B = (loss_BT * mask_BT).sum(1) / mask_BT.sum(1).clamp(min=1)
    return per_seq_B.sum() / sizes.sequences


def dr_grpo_aggregate(loss_BT: torch.Tensor, mask_BT: torch.Tensor, sizes: BatchSizes) -> torch.Tensor:
    return (loss_BT * mask_BT).sum() / (sizes.sequences * sizes.max_new_tokens)


def dapo_aggregate(loss_BT: torch.Tensor, mask_BT: torch.Tensor, sizes: BatchSizes) -> torch.Tensor:
    return (loss_BT * mask_BT).sum() / max(sizes.tokens, 1)


LOSSES: dict[str, Aggregator] = {"grpo": grpo_aggregate, "dr_grpo": dr_grpo_aggregate, "dapo": dapo_aggregate}


def grpo_loss(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, adv_B: torch.Tensor, mask_BT: torch.Tensor,
              sizes: BatchSizes, *, loss_type: str, eps_low: float, eps_high: float, kl_beta: float = 0.0,
              ref_logp_BT: torch.Tensor | None = None, entropy_coef: float = 0.0,
              entropy_BT: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The full per-micro-batch loss (steps 4-5 above) and its diagnostics (token means).
    `entropy_coef` > 0 subtracts that weight of the per-token entropy (an exploration bonus,
    aggregated like the policy-gradient term); it needs `entropy_BT` with a gradient."""
    pg_BT, clipped_BT = clipped_pg_loss(logp_BT, old_logp_BT, adv_B, eps_low, eps_high)
    total_BT = pg_BT
    n_tok = mask_BT.sum().clamp(min=1)
    stats = {"clip_frac": float((clipped_BT * mask_BT).sum() / n_tok)}
    if kl_beta > 0:
        if ref_logp_BT is None:
            raise ValueError("kl_beta > 0 needs reference log-probs")
        kl_BT = k3_kl(logp_BT, ref_logp_BT)
        total_BT = total_BT + kl_beta * kl_BT
        stats["kl"] = float((kl_BT.detach() * mask_BT).sum() / n_tok)
    if entropy_coef > 0:
        if entropy_BT is None or not entropy_BT.requires_grad:
            raise ValueError("entropy_coef > 0 needs per-token entropies with a gradient")
        total_BT = total_BT - entropy_coef * entropy_BT
    return LOSSES[loss_type](total_BT, mask_BT, sizes), stats
