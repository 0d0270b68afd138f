"""Sampling for the API: token-id prompts in, tokens with their per-token log-probs out.

The rollout engine (`rl_core.engine.HFEngine`) samples from text prompts for the trainer; the API
needs what it does not return: token-id prompts, the log-probability of each sampled token, stop
tokens given as ids, top-k, and a per-request seed. This loop is that: one prompt, n rows, a KV cache,
a row leaves the batch when it stops (the engine's rule), stop strings matched with the engine's
`StopStrings`.

The log-prob returned for a token is the model's own, log softmax(logits) at temperature 1,
whatever temperature sampled it: it is what `forward_backward` computes for the same token, so an
on-policy importance ratio is exactly 1 at T = 1 (at other temperatures the sampler's distribution is
not the one these log-probs describe; the caller corrects for it or samples at T = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rl_core.engine import StopStrings, end_token_ids
from rl_core.serve.wire import Sequence, UserError


@dataclass
class SampleParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: Any = None  # None: the model's end tokens; [int]: exactly those ids; str or [str]: strings + end tokens


def stop_rules(model: Any, tokenizer: Any, stop: Any) -> tuple[list[int], StopStrings]:
    """(stop token ids, stop strings) for the SDK's `stop` field; `[]` stops at nothing."""
    ends = end_token_ids(model, tokenizer)
    if stop is None:
        return ends, StopStrings(tokenizer, ())
    if isinstance(stop, str):
        return ends, StopStrings(tokenizer, (stop,))
    stop = list(stop)
    if all(isinstance(s, int) for s in stop):
        return stop, StopStrings(tokenizer, ())
    if all(isinstance(s, str) for s in stop):
        return ends, StopStrings(tokenizer, stop)
    raise UserError("sampling_params.stop must be a string, a list of strings or a list of token ids")


def draw(logits_BV: torch.Tensor, p: SampleParams, gen: torch.Generator) -> torch.Tensor:
    """One token per row from softmax(logits / T) after top-k and top-p filtering; argmax at T = 0."""
    if p.temperature <= 0:
        return logits_BV.argmax(-1)
    scaled_BV = logits_BV / p.temperature
    if 0 < p.top_k < scaled_BV.shape[-1]:
        kth_B1 = scaled_BV.topk(p.top_k, dim=-1).values[:, -1:]
        scaled_BV = scaled_BV.masked_fill(scaled_BV < kth_B1, float("-inf"))
    probs_BV = torch.softmax(scaled_BV, dim=-1)
    if p.top_p < 1.0:
        sorted_BV, order_BV = probs_BV.sort(dim=-1, descending=True)
        drop_BV = sorted_BV.cumsum(-1) - sorted_BV >= p.top_p  # the top token always stays
        probs_BV = torch.zeros_like(probs_BV).scatter_(-1, order_BV, sorted_BV.masked_fill(drop_BV, 0.0))
    return torch.multinomial(probs_BV, 1, generator=gen).squeeze(1)


@torch.no_grad()
def sample(model: Any, tokenizer: Any, prompt: list[int], n: int, p: SampleParams,
           want_prompt_logprobs: bool = False) -> tuple[list[Sequence], list[float] | None]:
    """n continuations of `prompt` (and, if asked, each prompt token's log-prob given its prefix)."""
    if not prompt:
        raise UserError("the prompt is empty: send at least one token")
    if p.max_tokens < 1:
        raise UserError("sampling_params.max_tokens must be at least 1")
    device = next(model.parameters()).device
    stop_ids, stop_strings = stop_rules(model, tokenizer, p.stop)
    gen = torch.Generator(device=device)
    gen.manual_seed(p.seed if p.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    ids_1L = torch.tensor([prompt], dtype=torch.long, device=device)
    out = model(input_ids=ids_1L, use_cache=True, logits_to_keep=0 if want_prompt_logprobs else 1)
    prompt_lp = None
    if want_prompt_logprobs:
        lp_LV = torch.log_softmax(out.logits[0, :-1].float(), dim=-1)
        prompt_lp = [float("nan")] + lp_LV.gather(1, ids_1L[0, 1:, None]).squeeze(1).tolist()
    cache = out.cache
    if n > 1:
        for layer in cache.layers:
            layer.batch_repeat_interleave(n)
    logits_BV = out.logits[:, -1].float().repeat_interleave(n, 0)
    pos_B1 = torch.full((n, 1), len(prompt), dtype=torch.long, device=device)
    alive_B = torch.arange(n, device=device)
    stop_V = torch.zeros(logits_BV.shape[-1], dtype=torch.bool, device=device)
    stop_V[[i for i in stop_ids if 0 <= i < stop_V.shape[0]]] = True
    seqs = [Sequence(tokens=[], logprobs=[], stopped=False) for _ in range(n)]
    for t in range(p.max_tokens):
        token_B = draw(logits_BV, p, gen)
        logp_B = torch.log_softmax(logits_BV, dim=-1).gather(1, token_B[:, None]).squeeze(1)
        alive = alive_B.tolist()
        for row, tok, lp in zip(alive, token_B.tolist(), logp_B.tolist(), strict=True):
            seqs[row].tokens.append(tok)
            seqs[row].logprobs.append(lp)
        hits = torch.tensor(stop_strings.hits([seqs[r].tokens for r in alive]), device=device, dtype=torch.bool)
        stop_B = stop_V[token_B] | hits
        for row in alive_B[stop_B].tolist():
            seqs[row].stopped = True
        keep_B = ~stop_B
        if t == p.max_tokens - 1 or not bool(keep_B.any()):
            break
        if not bool(keep_B.all()):
            idx = keep_B.nonzero().squeeze(1)
            for layer in cache.layers:
                layer.batch_select_indices(idx)
            alive_B, token_B, pos_B1 = alive_B[idx], token_B[idx], pos_B1[idx]
        mask_BL = torch.ones((alive_B.shape[0], int(pos_B1[0, 0]) + 1), dtype=torch.long, device=device)
        out = model(input_ids=token_B[:, None], attention_mask=mask_BL, position_ids=pos_B1, cache=cache,
                    use_cache=True, logits_to_keep=1)
        cache, logits_BV, pos_B1 = out.cache, out.logits[:, -1].float(), pos_B1 + 1
    return seqs, prompt_lp
