"""The environment contract the trainer sees: prompt in, reward + metrics out.

rl_core never touches DuckDB; `sql_env.SQLEnvironment` implements this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class StepResult:
    """Score of one completion: total reward, its per-component breakdown and diagnostics."""

    reward: float
    components: dict[str, float] = field(default_factory=dict)
    correct: bool = False  # execution match with the gold result (the metric we report)
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"status": "syntax_error", "sql": ...}


class Environment(Protocol):
    def prompt(self, example_id: str) -> str:
        """The text the policy continues for this example (already rendered)."""

    def example_ids(self, split: str) -> Sequence[str]:
        """Ids of the examples in a split, in a stable order."""

    def score(self, example_id: str, completions: Sequence[str]) -> list[StepResult]:
        """Score completions of one prompt (a GRPO group); thread-safe and batched inside."""
