"""Plain data types shared across sql_env. No DuckDB import here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Difficulty = Literal["easy", "medium", "hard"]
ExecStatus = Literal[
    "ok", "syntax_error", "schema_error", "timeout", "too_many_rows", "forbidden", "runtime_error"
]


@dataclass(frozen=True)
class Example:
    """One text-to-SQL example; the same shape for every source (built-in, Spider, BIRD, ...)."""

    id: str
    db_id: str
    question: str
    gold_sql: str
    evidence: str | None = None
    difficulty: Difficulty | None = None
    family: str | None = None  # question family (built-in only), e.g. "filter_range"
    # built-in dev/test only: what train lacks ("composition": schema x family, "phrasing")
    holdout: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Example:
        return cls(**{k: row.get(k) for k in cls.__dataclass_fields__ if k in row})


@dataclass
class Execution:
    """What running one query in the sandbox produced. `run` never raises; errors land here."""

    status: ExecStatus
    rows: list[tuple] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"
