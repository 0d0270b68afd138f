"""Held-out evaluation: greedy execution accuracy (with its standard error) and pass@k.

Greedy decoding, a fixed split and a fixed item count: nothing here is tuned by training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rl_core.engine import Engine
from rl_core.env import Environment, StepResult
from rl_core.stats import binomial_se


@dataclass
class EvalResult:
    accuracy: float
    stderr: float  # binomial standard error of `accuracy`
    n: int
    items: list[tuple[str, str, StepResult]] = field(default_factory=list, repr=False)  # (id, text, verdict)


Progress = Callable[[int, int], None]  # (items done, items in all)


def greedy_accuracy(engine: Engine, env: Environment, ids: Sequence[str], *, max_new_tokens: int,
                    batch_size: int = 64, on_progress: Progress | None = None) -> EvalResult:
    """Fraction of `ids` whose greedy completion's result set equals the gold one."""
    items = []
    for start in range(0, len(ids), batch_size):
        chunk = list(ids[start:start + batch_size])
        outs = engine.generate([env.prompt(i) for i in chunk], n=1, temperature=0.0, top_p=1.0,
                               max_new_tokens=max_new_tokens)
        for example_id, (comp,) in zip(chunk, outs, strict=True):
            (verdict,) = env.score(example_id, [comp.text])
            items.append((example_id, comp.text, verdict))
        if on_progress is not None:
            on_progress(len(items), len(ids))
    n = len(items)
    acc = sum(bool(v.correct) for _, _, v in items) / n if n else 0.0
    return EvalResult(acc, binomial_se(acc, n) or 0.0, n, items)


def pass_at_k(engine: Engine, env: Environment, ids: Sequence[str], *, k: int, temperature: float,
              top_p: float, max_new_tokens: int, batch_prompts: int = 16,
              on_progress: Progress | None = None) -> tuple[float, float]:
    """(pass@k, mean per-sample accuracy) with exactly k samples per item at `temperature`.

    pass@k here is the fraction of items with at least one correct sample among k, the unbiased
    estimator when exactly k samples are drawn.
    """
    solved = correct = total = 0
    for start in range(0, len(ids), batch_prompts):
        chunk = list(ids[start:start + batch_prompts])
        outs = engine.generate([env.prompt(i) for i in chunk], n=k, temperature=temperature, top_p=top_p,
                               max_new_tokens=max_new_tokens)
        for example_id, comps in zip(chunk, outs, strict=True):
            verdicts = env.score(example_id, [c.text for c in comps])
            hits = sum(bool(v.correct) for v in verdicts)
            solved += hits > 0
            correct += hits
            total += len(verdicts)
        if on_progress is not None:
            on_progress(min(start + batch_prompts, len(ids)), len(ids))
    return solved / max(len(ids), 1), correct / max(total, 1)
