"""Supervised steps on (prompt, completion) pairs: the built-in warm start and a trial's `sft_steps` stage.

The loss is next-token cross-entropy on the completion tokens only: the prompt is context.
Prompt and completion are tokenised separately (prompt with the tokenizer's special tokens,
completion without, then eos) so the model sees exactly the prompt tokens it will continue at RL time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rl_core.engine import end_token_ids

IGNORE = -100


@dataclass(frozen=True)
class SFTConfig:
    steps: int
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    schedule: str = "cosine"  # "cosine" decays to 10% of lr; "constant"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("SFT needs steps >= 0 and batch_size >= 1")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"unknown SFT schedule {self.schedule!r}: use 'cosine' or 'constant'")


def completion_end_id(model, tokenizer, prompt_style: str) -> int:
    """The token a target completion ends with: the one generation stops at after an answer.

    For chat prompts, the token the chat template writes right after an assistant message
    (Gemma-3 instruct: `<end_of_turn>`) when the model lists it among its end tokens; else EOS.
    """
    if prompt_style == "chat" and getattr(tokenizer, "chat_template", None):
        marker = "SELECT 1"
        text = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}],
                                             tokenize=False)
        after = tokenizer(text[text.rindex(marker) + len(marker):], add_special_tokens=False)["input_ids"]
        if after and after[0] in end_token_ids(model, tokenizer):
            return after[0]
    return tokenizer.eos_token_id


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], end_id: int | None = None
                 ) -> list[tuple[list[int], int]]:
    """Token ids of prompt + completion + end token (default EOS), and where the completion starts."""
    # BOS only when the rendered text lacks it (chat templates write it), as the rollout engine does.
    bos = getattr(tokenizer, "bos_token", None)
    prompts = [tokenizer(p, add_special_tokens=not (bos and p.startswith(bos)))["input_ids"] for p, _ in pairs]
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    end = tokenizer.eos_token_id if end_id is None else end_id
    return [(list(p) + list(c) + [end], len(p)) for p, c in zip(prompts, completions, strict=True)]


def collate(encoded: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels masked to the completion tokens."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids_BT = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels_BT = torch.full_like(input_ids_BT, IGNORE)
    mask_BT = torch.zeros_like(input_ids_BT)
    for row, (ids, start) in enumerate(encoded):
        input_ids_BT[row, : len(ids)] = torch.tensor(ids)
        labels_BT[row, start : len(ids)] = torch.tensor(ids[start:])
        mask_BT[row, : len(ids)] = 1
    return {"input_ids": input_ids_BT, "attention_mask": mask_BT, "labels": labels_BT}


def _lr_factor(cfg: SFTConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def completion_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over completion tokens (shifted: position t predicts token t+1)."""
    logits_BTV = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels_BT = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(
        logits_BTV[:, :-1].reshape(-1, logits_BTV.shape[-1]).float(), labels_BT.reshape(-1), ignore_index=IGNORE
    )


def _common_prefix(rows: Sequence[list[int]]) -> int:
    first, n = rows[0], min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != first[i] for r in rows):
            return i
    return n


def prefix_clusters(encoded: Sequence[tuple[list[int], int]], min_prefix: int = 16) -> list[tuple[list[int], int]]:
    """Rows (indices into `encoded`) grouped by a shared prompt prefix, with its usable length.

    Rows are sorted by prompt tokens and adjacent rows join a cluster while they share at least
    `min_prefix` prompt tokens. The usable prefix stops one token before the earliest completion,
    so every completion token is predicted inside the per-row part.
    """
    prompts = [ids[:start] for ids, start in encoded]
    order = sorted(range(len(encoded)), key=lambda i: prompts[i])
    clusters: list[list[int]] = []
    for i in order:
        if clusters and _common_prefix([prompts[clusters[-1][0]], prompts[i]]) >= min_prefix:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    out = []
    for rows in clusters:
        shared = _common_prefix([prompts[i] for i in rows])
        out.append((rows, min(shared, min(len(prompts[i]) for i in rows) - 1) if len(rows) > 1 else 0))
    return out


def shared_prefix_loss(model, encoded: Sequence[tuple[list[int], int]], pad_id: int,
                       min_prefix: int = 16) -> torch.Tensor:
    """`completion_loss` of the same batch, with each shared prompt prefix encoded once.

    Prompts of one database share their schema text, most of a prompt. Each cluster's prefix is
    run once with a KV cache, the cache repeated per row, and only the rows' remaining tokens run
    on top: the loss and its gradient are those of the plain batch (the gradient flows back
    through the repeat), at a fraction of the compute. The LM head runs only where a completion
    token is predicted. Equality with `completion_loss` is tested.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = causal_lm.get_decoder(), causal_lm.get_output_embeddings()
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    n_tokens = sum(len(ids) - start for ids, start in encoded)
    for rows, shared in prefix_clusters(encoded, min_prefix):
        cache = None
        if shared > 0:
            prefix_1L = torch.tensor([encoded[rows[0]][0][:shared]], device=device)
            cache = decoder(input_ids=prefix_1L, use_cache=True).cache
            for layer in cache.layers:
                layer.batch_repeat_interleave(len(rows))
        tails = [encoded[i][0][shared:] for i in rows]
        width = max(len(t) for t in tails)
        input_BS = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask_BS = torch.zeros_like(input_BS)
        select_rows, select_cols, targets = [], [], []
        for r, (i, tail) in enumerate(zip(rows, tails, strict=True)):
            input_BS[r, : len(tail)] = torch.tensor(tail)
            mask_BS[r, : len(tail)] = 1
            ids, start = encoded[i]
            for t in range(start, len(ids)):  # hidden state at t-1 predicts token t
                select_rows.append(r)
                select_cols.append(t - 1 - shared)
                targets.append(ids[t])
        mask_BL = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), mask_BS], dim=1)
        positions_BS = (shared + torch.arange(width)).expand(len(rows), width)
        hidden_BSH = decoder(input_ids=input_BS.to(device), attention_mask=mask_BL.to(device),
                             position_ids=positions_BS.to(device), cache=cache,
                             use_cache=cache is not None).last_hidden_state
        logits_NV = head(hidden_BSH[torch.tensor(select_rows), torch.tensor(select_cols)]).float()
        if softcap:
            logits_NV = torch.tanh(logits_NV / softcap) * softcap
        total = total + torch.nn.functional.cross_entropy(
            logits_NV, torch.tensor(targets, device=device), reduction="sum")
    return total / max(n_tokens, 1)


def train_sft(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    cfg: SFTConfig,
    on_step: Callable[[int, float], None] | None = None,
    end_id: int | None = None,
) -> list[float]:
    """Run `cfg.steps` AdamW steps over shuffled epochs of `pairs`; returns the loss per step.

    Targets end with `end_id` (default EOS; `completion_end_id` gives an instruct model's).
    """
    if not pairs or cfg.steps == 0:
        return []
    encoded = encode_pairs(tokenizer, pairs, end_id)
    rng = random.Random(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(cfg, s))
    order: list[int] = []
    losses = []
    model.train()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:  # next epoch: reshuffle, never drop examples
            fresh = list(range(len(encoded)))
            rng.shuffle(fresh)
            order += fresh
        picked, order = order[: cfg.batch_size], order[cfg.batch_size :]
        loss = shared_prefix_loss(model, [encoded[i] for i in picked], tokenizer.pad_token_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses
