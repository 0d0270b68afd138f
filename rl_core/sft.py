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


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + completion + eos, and where the completion starts."""
    # BOS only when the rendered text lacks it (chat templates write it), as the rollout engine does.
    bos = getattr(tokenizer, "bos_token", None)
    prompts = [tokenizer(p, add_special_tokens=not (bos and p.startswith(bos)))["input_ids"] for p, _ in pairs]
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [
        (list(p) + list(c) + [eos], len(p)) for p, c in zip(prompts, completions, strict=True)
    ]


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


def train_sft(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    cfg: SFTConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run `cfg.steps` AdamW steps over shuffled epochs of `pairs`; returns the loss per step."""
    if not pairs or cfg.steps == 0:
        return []
    device = next(model.parameters()).device
    encoded = encode_pairs(tokenizer, pairs)
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
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in picked], tokenizer.pad_token_id).items()}
        loss = completion_loss(model, batch)
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
