"""The GRPO loop: sample, score, keep groups with signal, update (algorithm in rl_core/grpo.py).

One `GRPOTrainer.step()`:
  draw      P' prompts from the curriculum (rl_core/curriculum.py: a seeded shuffle, or pass rates)
  generate  P' prompts x G completions in one engine call (P' = 2P with dynamic sampling, up to
            `sampling_rounds` rounds until P groups with mixed rewards are collected; P' = P and
            every group kept without it)
  score     env.score_many([(example_id, texts), ...]): the round's groups in one call
            (the Environment protocol, rl_core/env.py; DuckDB lives there)
  train     with dynamic sampling drop zero-advantage groups (a shortfall below P is logged as
            `groups_short`), then `ppo_epochs` optimizer steps on the kept groups,
            each accumulating `grad_accum` micro-batches, clipping the grad norm, AdamW
The trainer never sees SQL or DuckDB: only prompts, completion texts and `StepResult`s.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rl_core.curriculum import PromptSampler as PromptSampler  # re-exported (it lived here)
from rl_core.curriculum import make_sampler
from rl_core.engine import Completion, Engine, autocast_context
from rl_core.env import Environment, StepResult
from rl_core.grpo import (
    BatchSizes,
    group_advantages,
    grpo_loss,
    head_log_probs,
    masked_head_log_probs,
    mixed_groups,
)
from rl_core.spec import HParams


class NonFiniteLoss(RuntimeError):
    """The loss or gradient became NaN/inf: the trial is failed as `nan_loss`."""


@dataclass
class Group:
    example_id: str
    completions: list[Completion]
    results: list[StepResult]


def lr_factor(step: int, warmup: int, schedule: str, total: int | None) -> float:
    """Linear warmup, then constant or cosine decay to zero at `total` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine" and total:
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


class GRPOTrainer:
    def __init__(self, model: Any, env: Environment, engine: Engine, hp: HParams, train_ids: Sequence[str],
                 *, seed: int, pad_id: int, total_steps: int | None = None, old_log_probs: bool = False) -> None:
        self.model, self.env, self.engine, self.hp = model, env, engine, hp
        # old_log_probs: the LM head on every padded position, entropy as a second head forward and
        # always recomputed in backward (kept to measure against; same loss and gradient).
        self.old_log_probs = old_log_probs
        self.pad_id = pad_id
        # The KL reference: the trainable weights as the first update found them (after any SFT
        # stage or parent weights), taken lazily by `_ref_logp` and kept in checkpoints.
        self.reference: list[torch.Tensor] | None = None
        self.sampler = make_sampler(hp.curriculum, train_ids, seed)  # rl_core/curriculum.py
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the policy has no trainable parameters")
        if any(p.dtype != torch.float32 for p in self.params):  # AdamW steps on bf16 lose small updates
            raise ValueError("trainable weights must be fp32 (load_policy keeps fp32 master weights); "
                             "compute runs in bf16 under autocast where it is fast")
        self.optimizer = torch.optim.AdamW(self.params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
        self.total_steps = total_steps
        self.device = next(model.parameters()).device
        self.step_count = 0
        # Steps the weights took before this trial (a `continue` of a parent): the learning-rate
        # schedule goes on from there instead of restarting its warm-up or its cosine at the peak.
        self.schedule_offset = 0
        self._rng_after_step: torch.Tensor | None = None  # saved with the state, whatever evals drew since
        self._rng_at_first_step: torch.Tensor | None = None  # a continuation's: set when it starts

    # ---- rollouts -------------------------------------------------------------------------
    def collect(self) -> tuple[list[Group], list[Group], dict[str, float]]:
        """Generate and score; returns (all groups generated, groups kept for training, timings and
        the mixed share). Every scored group is shown to the curriculum (`hparams.curriculum`)."""
        hp = self.hp
        rounds = hp.sampling_rounds if hp.dynamic_sampling else 1
        per_round = 2 * hp.prompts_per_step if hp.dynamic_sampling else hp.prompts_per_step
        generated: list[Group] = []
        kept: list[Group] = []
        t_gen = t_score = 0.0
        n_mixed = 0
        for _ in range(rounds):
            ids = self.sampler.take(per_round)
            t0 = time.perf_counter()
            outs = self.engine.generate([self.env.prompt(i) for i in ids], n=hp.group_size,
                                        temperature=hp.temperature, top_p=hp.top_p,
                                        max_new_tokens=hp.max_new_tokens)
            t1 = time.perf_counter()
            groups = [Group(i, comps, results) for i, comps, results
                      in zip(ids, outs, self._score(ids, outs), strict=True)]
            t_gen, t_score = t_gen + t1 - t0, t_score + time.perf_counter() - t1
            generated.extend(groups)
            for g in groups:  # the curriculum learns from these rollouts before the next round draws
                self.sampler.observe(g.example_id, [r.reward for r in g.results], [r.correct for r in g.results])
            rewards_PG = torch.tensor([[r.reward for r in g.results] for g in groups], dtype=torch.float32)
            mixed = mixed_groups(rewards_PG).tolist()
            n_mixed += sum(mixed)
            if not hp.dynamic_sampling:  # plain GRPO (TRL's): every group trains, equal rewards included
                kept.extend(groups)
                break
            kept.extend(g for g, m in zip(groups, mixed, strict=True) if m)
            if len(kept) >= hp.prompts_per_step:
                break
        # mixed_share: the share of generated groups with a learning signal, what a curriculum raises
        return generated, kept[:hp.prompts_per_step], {"t_generate": t_gen, "t_score": t_score,
                                                        "mixed_share": n_mixed / max(len(generated), 1)}

    def _score(self, ids: list[str], outs: list[list[Completion]]) -> list[list[StepResult]]:
        texts = [[c.text for c in comps] for comps in outs]
        return [list(g) for g in self.env.score_many(list(zip(ids, texts, strict=True)))]  # one batched call

    # ---- update ---------------------------------------------------------------------------
    def _collate(self, groups: list[tuple[list[int], list[list[int]]]]) -> dict[str, Any]:
        """Prompts once per group (left-padded), completions per sample (right-padded).

        The layout `generate` uses: every completion starts right after column `width_p`.
        Every group must have the same number of completions.
        """
        sizes = {len(comps) for _, comps in groups}
        if len(sizes) != 1:
            raise ValueError("every group must have the same number of completions")
        width_p = max(len(p) for p, _ in groups)
        width_c = max(max(len(c) for _, comps in groups for c in comps), 1)
        prompt_PL = torch.full((len(groups), width_p), self.pad_id, dtype=torch.long)
        pmask_PL = torch.zeros_like(prompt_PL)
        comps = [c for _, cs in groups for c in cs]
        comp_BC = torch.full((len(comps), width_c), self.pad_id, dtype=torch.long)
        cmask_BC = torch.zeros_like(comp_BC)
        for row, (p, _) in enumerate(groups):
            prompt_PL[row, width_p - len(p):] = torch.tensor(p)
            pmask_PL[row, width_p - len(p):] = 1
        for row, c in enumerate(comps):
            comp_BC[row, :len(c)] = torch.tensor(c, dtype=torch.long)
            cmask_BC[row, :len(c)] = 1
        d = self.device
        return {"prompt_PL": prompt_PL.to(d), "pmask_PL": pmask_PL.to(d), "targets_BC": comp_BC.to(d),
                "comp_mask_BC": cmask_BC.float().to(d), "group": sizes.pop()}

    def _log_probs(self, model: Any, batch: dict[str, Any], with_entropy: bool = False,
                   entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs (B, C) of each completion token under the tempered policy (+ entropies).

        Each prompt is encoded once per group and its KV cache repeated G times: the gradient is
        exact (it flows back through the repeat) but the prompt costs 1/G of a naive forward,
        which on CPU with schema-long prompts is most of the training compute. The decoder
        returns hidden states; `head_log_probs` applies the LM head chunk by chunk.
        """
        causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        decoder, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
        prompt_PL, pmask_PL, g = batch["prompt_PL"], batch["pmask_PL"], batch["group"]
        ppos_PL = (pmask_PL.cumsum(-1) - 1).clamp(min=0)
        cache = None
        with autocast_context(self.device):
            if prompt_PL.shape[1] > 1:
                cache = decoder(input_ids=prompt_PL[:, :-1], attention_mask=pmask_PL[:, :-1],
                                position_ids=ppos_PL[:, :-1], use_cache=True).cache
                for layer in cache.layers:
                    layer.batch_repeat_interleave(g)
            comp_BC = batch["targets_BC"]
            inputs_B1C = torch.cat([prompt_PL[:, -1:].repeat_interleave(g, 0), comp_BC], dim=1)
            mask_BLC = torch.cat([pmask_PL.repeat_interleave(g, 0), batch["comp_mask_BC"].long()], dim=1)
            pos_BLC = (mask_BLC.cumsum(-1) - 1).clamp(min=0)
            hidden_B1CH = decoder(input_ids=inputs_B1C, attention_mask=mask_BLC,
                                  position_ids=pos_BLC[:, -inputs_B1C.shape[1]:], cache=cache,
                                  use_cache=cache is not None).last_hidden_state
            softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
            if self.old_log_probs:
                if entropy_grad:
                    raise ValueError("entropy_coef > 0 needs the default log-prob path (old_log_probs=False)")
                return head_log_probs(hidden_B1CH[:, :-1], head, comp_BC, temperature=self.hp.temperature,
                                      softcap=softcap, with_entropy=with_entropy)
            return masked_head_log_probs(hidden_B1CH[:, :-1], head, comp_BC, batch["comp_mask_BC"],
                                         temperature=self.hp.temperature, softcap=softcap,
                                         with_entropy=with_entropy, entropy_grad=entropy_grad)

    def update(self, groups: list[Group]) -> dict[str, float]:
        hp = self.hp
        rewards_PG = torch.tensor([[r.reward for r in g.results] for g in groups], dtype=torch.float32)
        adv_PG = group_advantages(rewards_PG, scale=hp.scale_rewards)
        per_micro = math.ceil(len(groups) / hp.grad_accum)
        micro = [groups[i:i + per_micro] for i in range(0, len(groups), per_micro)]
        micro_adv = [adv_PG[i:i + per_micro].reshape(-1).to(self.device) for i in range(0, len(groups), per_micro)]
        batches = [self._collate([(g.completions[0].prompt_ids, [c.token_ids for c in g.completions]) for g in mb])
                   for mb in micro]
        sizes = BatchSizes(sequences=sum(len(g.completions) for g in groups),
                           tokens=int(sum(b["comp_mask_BC"].sum() for b in batches)), max_new_tokens=hp.max_new_tokens)
        old_logp: list[torch.Tensor] = []
        ref_logp: list[torch.Tensor | None] = [self._ref_logp(b) for b in batches]
        stats: dict[str, list[float]] = {"loss": [], "grad_norm": [], "clip_frac": [], "kl_ref": [], "entropy": []}
        # Eval mode on purpose: dropout (LoRA's included) stays off, so every epoch scores the very
        # policy that sampled (no mask then) and epoch 0's ratio is exactly 1, as in TRL.
        self.model.eval()
        for epoch in range(hp.ppo_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for k, (batch, adv_B) in enumerate(zip(batches, micro_adv, strict=True)):
                bonus = hp.entropy_coef > 0
                logp_BC, ent_BC = self._log_probs(self.model, batch, with_entropy=epoch == 0 or bonus,
                                                  entropy_grad=bonus)
                if epoch == 0:  # epoch 0 runs before any optimizer step: these *are* pi_old's
                    old_logp.append(logp_BC.detach())
                    stats["entropy"].append(float((ent_BC.detach() * batch["comp_mask_BC"]).sum() / sizes.tokens))
                loss, st = grpo_loss(logp_BC, old_logp[k], adv_B, batch["comp_mask_BC"], sizes,
                                     loss_type=hp.loss_type, eps_low=hp.clip_eps_low, eps_high=hp.clip_eps_high,
                                     kl_beta=hp.kl_beta, ref_logp_BT=ref_logp[k], entropy_coef=hp.entropy_coef,
                                     entropy_BT=ent_BC if bonus else None)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(f"loss became {loss.item()} at step {self.step_count}; "
                                        "lower learning_rate or raise grad_clip strictness")
                loss.backward()
                loss_sum += float(loss.detach())
                weight = float(batch["comp_mask_BC"].sum()) / max(sizes.tokens, 1)
                stats["clip_frac"].append(st["clip_frac"] * weight)
                if "kl" in st:  # KL to the reference, measured before this epoch's optimizer step
                    stats["kl_ref"].append(st["kl"] * weight)
            max_norm = hp.grad_clip if hp.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
            if not math.isfinite(grad_norm):
                raise NonFiniteLoss(f"gradient norm became {grad_norm} at step {self.step_count}; "
                                    "lower learning_rate")
            self.optimizer.step()
            stats["loss"].append(loss_sum)
            stats["grad_norm"].append(grad_norm)
        n_mb = len(batches)
        drift = self._drift_kl(groups[0], old_logp[0])
        out = {
            "loss": sum(stats["loss"]) / hp.ppo_epochs,
            "grad_norm": sum(stats["grad_norm"]) / hp.ppo_epochs,
            # the first epoch is exactly on-policy (ratio 1); report what the later epochs clipped
            "clip_frac": sum(stats["clip_frac"][n_mb:]) / max(1, hp.ppo_epochs - 1),
            "kl_drift": drift, "kl": drift,  # `kl`: the contract's curve, always the drift
            "entropy": sum(stats["entropy"]),
        }
        if stats["kl_ref"]:
            out["kl_ref"] = sum(stats["kl_ref"][-n_mb:])
        return out

    @torch.no_grad()
    def _drift_kl(self, group: Group, old_BC: torch.Tensor) -> float:
        """KL(pi_old || pi_new) per token (k3, sampled from pi_old) after this step's last update.

        The drift of the whole step at any `ppo_epochs` (measured inside the epochs it was 0 at one
        epoch and missed the last update), estimated on the step's first group: one extra no-grad
        forward over G completions, not the whole batch."""
        one = self._collate([(group.completions[0].prompt_ids, [c.token_ids for c in group.completions])])
        g, width = one["group"], one["targets_BC"].shape[1]
        mask_BC = one["comp_mask_BC"]
        delta_BC = self._log_probs(self.model, one)[0] - old_BC[:g, :width]
        return float(((torch.exp(delta_BC) - delta_BC - 1) * mask_BC).sum() / mask_BC.sum().clamp(min=1))

    @torch.no_grad()
    def _ref_logp(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """Log-probs under the reference: the policy GRPO started from, not the pre-SFT base."""
        if self.hp.kl_beta <= 0:
            return None  # beta 0: skip the reference forward entirely
        if self.reference is None:  # first use comes before the first optimizer step
            self.reference = [p.detach().clone() for p in self.params]
        with swapped_weights(self.params, self.reference):
            return self._log_probs(self.model, batch)[0]

    # ---- one step -------------------------------------------------------------------------
    def step(self) -> tuple[dict[str, float], list[Group]]:
        """One GRPO step; returns its metrics and the generated groups (for sample logging)."""
        t0 = time.perf_counter()
        if self._rng_at_first_step is not None:
            torch.set_rng_state(self._rng_at_first_step)
            self._rng_at_first_step = None
        generated, kept, timings = self.collect()
        t1 = time.perf_counter()
        total = self.total_steps + self.schedule_offset if self.total_steps else None
        lr = self.hp.learning_rate * lr_factor(self.step_count + self.schedule_offset, self.hp.warmup_steps,
                                               self.hp.schedule, total)
        for group in self.optimizer.param_groups:  # the schedule is a function of the step: no state
            group["lr"] = lr
        train = {"loss": 0.0, "grad_norm": 0.0, "clip_frac": 0.0, "kl": 0.0, "kl_drift": 0.0, "entropy": 0.0}
        if kept:
            train = self.update(kept)
            self.engine.sync()
        self.step_count += 1
        self._rng_after_step = torch.get_rng_state()
        metrics = {"step": self.step_count, **rollout_stats(generated), **train, **timings,
                   "t_train": time.perf_counter() - t1, "lr": lr, "groups_generated": len(generated),
                   "groups_trained": len(kept), "groups_short": max(0, self.hp.prompts_per_step - len(kept)),
                   **self.sampler.metrics(), "t_step": time.perf_counter() - t0}
        return metrics, generated

    def state_dict(self) -> dict[str, Any]:
        trainable = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        rng = self._rng_after_step if self._rng_after_step is not None else torch.get_rng_state()
        return {"step": self.step_count, "model": trainable, "optimizer": self.optimizer.state_dict(),
                "sampler": self.sampler.state_dict(), "reference": self.reference, "torch_rng": rng,
                "schedule_offset": self.schedule_offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(state["model"]) - {n for n, _ in self.model.named_parameters()}
        if missing:
            raise ValueError(f"checkpoint does not fit this model (e.g. {sorted(missing)[0]})")
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, value in state["model"].items():
                params[name].copy_(value)
        if "reference" not in state and self.hp.kl_beta > 0 and state["step"] > 0:
            raise ValueError("this checkpoint predates the saved KL reference: start the trial afresh")
        self._load_reference(state.get("reference"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        self.step_count = state["step"]
        self.schedule_offset = state.get("schedule_offset", 0)

    def continue_from(self, state: dict[str, Any]) -> None:
        """Go on from a parent's final trainer state (`state_dict()` without the weights, which the
        policy already holds): optimizer moments, KL reference, prompt order, schedule position, and
        the RNG as the parent's last step left it (restored when the first step starts, so
        evaluations before it draw nothing from the parent's stream). Step counts stay this trial's."""
        self.optimizer.load_state_dict(state["optimizer"])
        self._load_reference(state.get("reference"))
        if "sampler" in state:
            self.sampler.load_state_dict(state["sampler"])
        self.schedule_offset = int(state.get("step", 0)) + int(state.get("schedule_offset", 0))
        self._rng_at_first_step = state.get("torch_rng")

    def _load_reference(self, reference: list[torch.Tensor] | None) -> None:
        """The saved reference (loaded on CPU) goes where each trainable weight lives."""
        self.reference = None if reference is None else [
            r.to(p.device) for r, p in zip(reference, self.params, strict=True)]


@contextlib.contextmanager
def swapped_weights(params: list[torch.Tensor], values: list[torch.Tensor]) -> Iterator[None]:
    """Run the model with `values` in place of `params` (a storage swap: no copy, no second model)."""
    def swap() -> None:
        for i, p in enumerate(params):
            p.data, values[i] = values[i], p.data

    swap()
    try:
        yield
    finally:
        swap()


def rollout_stats(groups: list[Group]) -> dict[str, float]:
    """Means over every generated completion of the step (not only the kept groups)."""
    results = [r for g in groups for r in g.results]
    comps = [c for g in groups for c in g.completions]
    n = max(len(results), 1)
    stats = {"reward_mean": sum(r.reward for r in results) / n,
             "batch_accuracy": sum(bool(r.correct) for r in results) / n,
             "completion_len": sum(len(c.token_ids) for c in comps) / max(len(comps), 1),
             "truncated_frac": sum(not c.finished for c in comps) / max(len(comps), 1)}
    for name in sorted({k for r in results for k in r.components}):
        stats[f"reward/{name}"] = sum(r.components.get(name, 0.0) for r in results) / n
    return stats
