"""The environment contract the trainer and the trial runner see: prompt in, reward + metrics out.

rl_core never touches DuckDB; `sql_env.SQLEnvironment` implements this protocol structurally
(sql_env imports nothing from rl_core; tests/rl_core/test_env_protocol.py holds it to every member).
Every method rl_core calls on an environment is declared here, so rl_core calls them directly and
never probes with `getattr`: a member added to the trainer's needs is added here first, and the
check names the environment that lacks it. Toy environments (tests, benchmarks) subclass
`BasicEnvironment`, which supplies the members a toy has no use for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class StepResult:
    """Score of one completion: total reward, its per-component breakdown and diagnostics."""

    reward: float
    components: dict[str, float] = field(default_factory=dict)
    correct: bool = False  # execution match with the gold result (the metric we report)
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. {"status": "syntax_error", "sql": ...}


@runtime_checkable
class Environment(Protocol):
    @property
    def stop_strings(self) -> Sequence[str]:
        """Where a completion ends, for the rollout engine (empty: at the end-of-sequence token)."""

    def example_ids(self, split: str) -> Sequence[str]:
        """Ids of the examples in a split, in a stable order."""

    def prompt(self, example_id: str) -> str:
        """The text the policy continues for this example (already rendered)."""

    def question(self, example_id: str) -> str:
        """The example's question as a person reads it (samples.jsonl shows it beside the completion)."""

    def score(self, example_id: str, completions: Sequence[str]) -> Sequence[StepResult]:
        """Score completions of one prompt (a GRPO group); thread-safe and batched inside."""

    def score_many(self, groups: Sequence[tuple[str, Sequence[str]]]) -> Sequence[Sequence[StepResult]]:
        """Scores of many groups (example id, completions) at once, in order: a GRPO step's batch."""

    def close(self) -> None:
        """Release what scoring holds (connections, worker threads or processes); idempotent."""


class BasicEnvironment:
    """The members a toy environment has no use for: no stop strings, the prompt as the question,
    groups scored one at a time, nothing to close. Subclasses write example_ids, prompt and score."""

    stop_strings: Sequence[str] = ()

    def example_ids(self, split: str) -> Sequence[str]:
        raise NotImplementedError

    def prompt(self, example_id: str) -> str:
        raise NotImplementedError

    def score(self, example_id: str, completions: Sequence[str]) -> Sequence[StepResult]:
        raise NotImplementedError

    def question(self, example_id: str) -> str:
        return self.prompt(example_id)

    def score_many(self, groups: Sequence[tuple[str, Sequence[str]]]) -> list[Sequence[StepResult]]:
        return [self.score(example_id, completions) for example_id, completions in groups]

    def close(self) -> None:
        pass
