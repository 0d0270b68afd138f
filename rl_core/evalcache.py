"""Greedy evaluations of a base policy, computed once and reused.

A base policy's greedy outcomes on a split are deterministic, yet every fresh trial of a session,
every session and the test-split confirmation's base job evaluated them again (400 dev questions:
8-20 s on the tiny policy, minutes on gemma-3-270m). The runner asks this cache instead whenever
the policy it evaluates is exactly the base: no parent weights, no supervised stage, no GRPO step.

The key is what decides the outcomes, read off the objects themselves rather than their names:
a digest of the loaded weights (so a rebuilt model or another checkpoint at the same path is a
different key), the tokenizer's vocabulary size, the questions' prompts in order, the dataset and
split names, `max_new_tokens`, the engine, the device type, the weights' dtype, and the source of the
code that decodes and judges (the engine, the evaluation, sql_env's scoring), so a fix there is
never answered from an older cache. Entries live in
`$OPENRL_AGENT_CACHE/evals/<key>.json`, written atomically; a damaged entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rl_core.trialdir import write_json_atomic

CACHE_VERSION = 1
_ROOT = Path(__file__).resolve().parents[1]
_JUDGING_CODE = ("rl_core/engine.py", "rl_core/evaluate.py", "sql_env/environment.py", "sql_env/match.py",
                 "sql_env/sandbox.py")


def code_digest() -> str:
    h = hashlib.sha256()
    for rel in _JUDGING_CODE:
        path = _ROOT / rel
        h.update(path.read_bytes() if path.is_file() else rel.encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    root = Path(os.environ.get("OPENRL_AGENT_CACHE", Path.home() / ".cache" / "openrl-agent"))
    return root / "evals"


def weights_digest(state: dict[str, Any]) -> str:
    """sha256 over every tensor's name, shape, dtype and bytes (a state dict; about 1 s per GB)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def eval_key(*, weights: str, vocab_size: int, prompts: list[str], dataset: str, split: str,
             max_new_tokens: int, engine: str, device: str, dtype: str) -> str:
    questions = hashlib.sha256("\x00".join(prompts).encode()).hexdigest()
    fields = {"v": CACHE_VERSION, "code": code_digest(), "weights": weights, "vocab": vocab_size, "questions": questions,
              "dataset": dataset, "split": split, "max_new_tokens": max_new_tokens, "engine": engine,
              "device": device, "dtype": dtype}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def cached_row(key: str, compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The evaluation row for `key` (accuracy, stderr, n, outcomes) and whether it came from the cache."""
    path = cache_dir() / f"{key}.json"
    try:
        row = json.loads(path.read_text())
        if isinstance(row, dict) and isinstance(row.get("outcomes"), dict):
            return row, True
    except (OSError, ValueError):
        pass
    row = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {k: row[k] for k in ("accuracy", "stderr", "n", "outcomes")})
    return row, False
