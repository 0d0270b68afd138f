"""Reward components and the JSON-serialisable `RewardSpec` that weights them.

A spec is `{"components": {name: weight}, "params": {...}}`. The total reward is
`sum(weight * component(x))`; the breakdown reports each component's *unweighted* value in [0, 1]
(length_penalty in [-1, 0]) so logs stay comparable across specs.

Every component is a pure function of one `ScoreInput` and the params; the environment builds the
input (extracted SQL, its execution, the cached gold execution, the match verdict).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from sql_env.match import normalize_rows
from sql_env.types import Execution


@dataclass(frozen=True)
class ScoreInput:
    """Everything a reward component may look at for one completion."""

    completion: str
    sql: str | None  # SQL extracted from the completion; None when none was found
    format_ok: bool  # SQL was found where the prompt asked for it
    execution: Execution | None  # the prediction's execution; None when there was no SQL
    gold: Execution
    gold_sql: str
    correct: bool  # execution match (sql_env.match.results_match) with the gold result


@dataclass(frozen=True)
class RewardParams:
    """Knobs of the components; every field has a default, so `params` may be empty."""

    match_mode: str = "spider"  # execution match rule: "spider" | "bird"
    partial_credit_unit: str = "rows"  # F1 over "rows" or "cells"
    length_free_chars: int = 200  # completion characters before length_penalty starts
    length_scale_chars: int = 200  # each this many extra characters cost 1.0, capped at 1.0

    def __post_init__(self) -> None:
        if self.match_mode not in ("spider", "bird"):
            raise ValueError(f"params.match_mode must be 'spider' or 'bird', got {self.match_mode!r}")
        if self.partial_credit_unit not in ("rows", "cells"):
            raise ValueError(f"params.partial_credit_unit must be 'rows' or 'cells', got {self.partial_credit_unit!r}")
        for name in ("length_free_chars", "length_scale_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"params.{name} must be a whole number >= 0, got {value!r}")
        if self.length_scale_chars == 0:
            raise ValueError("params.length_scale_chars must be > 0 (it divides the extra length)")


# -- components ------------------------------------------------------------------------------------
def execution_match(x: ScoreInput, p: RewardParams) -> float:
    """1 when the predicted result matches the gold result, else 0."""
    return 1.0 if x.correct else 0.0


def executes(x: ScoreInput, p: RewardParams) -> float:
    """1 when the SQL ran without error (right or wrong), else 0."""
    return 1.0 if x.execution is not None and x.execution.ok else 0.0


def format_(x: ScoreInput, p: RewardParams) -> float:
    """1 when SQL was found where the prompt asked for it, else 0."""
    return 1.0 if x.format_ok else 0.0


def partial_credit(x: ScoreInput, p: RewardParams) -> float:
    """F1 between the predicted and gold results as multisets of rows (or of cells).

    A row is compared as the multiset of its cells, so column order does not matter; values are
    normalised as in execution match. A match scores 1; a failed execution or gold scores 0.
    """
    if x.correct:
        return 1.0
    if x.execution is None or not x.execution.ok or not x.gold.ok:
        return 0.0
    pred, gold = normalize_rows(x.execution.rows), normalize_rows(x.gold.rows)
    if p.partial_credit_unit == "cells":
        pred_items = Counter(cell for row in pred for cell in row)
        gold_items = Counter(cell for row in gold for cell in row)
    else:
        pred_items = Counter(_unordered(row) for row in pred)
        gold_items = Counter(_unordered(row) for row in gold)
    return _f1(pred_items, gold_items)


def length_penalty(x: ScoreInput, p: RewardParams) -> float:
    """-(characters beyond length_free_chars) / length_scale_chars, capped at -1."""
    excess = max(0, len(x.completion) - p.length_free_chars)
    return -min(1.0, excess / p.length_scale_chars)


def schema_link(x: ScoreInput, p: RewardParams) -> float:
    """F1 between the tables and columns the prediction uses and those the gold uses."""
    if not x.sql:
        return 0.0
    pred, gold = sql_identifiers(x.sql), sql_identifiers(x.gold_sql)
    if pred is None or gold is None:
        return 0.0
    return _f1(Counter(pred), Counter(gold))


COMPONENTS: dict[str, Callable[[ScoreInput, RewardParams], float]] = {
    "execution_match": execution_match,
    "partial_credit": partial_credit,
    "executes": executes,
    "format": format_,
    "length_penalty": length_penalty,
    "schema_link": schema_link,
}


def _f1(pred: Counter, gold: Counter) -> float:
    total = sum(pred.values()) + sum(gold.values())
    if total == 0:
        return 1.0
    return 2 * sum((pred & gold).values()) / total


def _unordered(row: tuple) -> tuple:
    return tuple(sorted(Counter(row).items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0]))))


@lru_cache(maxsize=16_384)
def sql_identifiers(sql: str) -> frozenset[str] | None:
    """Lower-cased table names (`t:name`) and column names (`c:name`) a query reads; None if unparsable.

    CTE names and output aliases are left out: they are the query's own names, not schema items.
    """
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except (sqlglot.errors.SqlglotError, ValueError, RecursionError):
        return None
    if tree is None:
        return None
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    aliases = {a.alias.lower() for a in tree.find_all(exp.Alias)}
    tables = {f"t:{t.name.lower()}" for t in tree.find_all(exp.Table) if t.name and t.name.lower() not in ctes}
    columns = {f"c:{c.name.lower()}" for c in tree.find_all(exp.Column) if c.name and c.name.lower() not in aliases}
    return frozenset(tables | columns)


# -- the spec --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RewardSpec:
    """Named components with weights plus component params; validated on construction."""

    components: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = ", ".join(sorted(COMPONENTS))
        if not isinstance(self.components, Mapping) or not self.components:
            raise ValueError(f'a reward needs at least one component, e.g. {{"execution_match": 1.0}}; known: {known}')
        for name, weight in self.components.items():
            if name not in COMPONENTS:
                raise ValueError(f"unknown reward component {name!r}; known: {known}")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ValueError(f"weight of reward component {name!r} must be a finite number, got {weight!r}")
        if not isinstance(self.params, Mapping):
            raise ValueError(f"reward params must be an object of settings, got {type(self.params).__name__}")
        allowed = [f.name for f in fields(RewardParams)]
        for key in self.params:
            if key not in allowed:
                raise ValueError(f"unknown reward param {key!r}; known: {', '.join(allowed)}")
        object.__setattr__(self, "components", {k: float(v) for k, v in self.components.items()})
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "_resolved", RewardParams(**self.params))

    @property
    def resolved_params(self) -> RewardParams:
        return self._resolved  # type: ignore[attr-defined]

    @classmethod
    def from_json(cls, obj: RewardSpec | Mapping[str, Any] | None) -> RewardSpec:
        """Accepts a spec, its JSON object, or None (binary execution match)."""
        if obj is None:
            return cls({"execution_match": 1.0})
        if isinstance(obj, RewardSpec):
            return obj
        if not isinstance(obj, Mapping):
            raise ValueError(f'a reward spec is an object like {{"components": {{"execution_match": 1.0}}}}, got {obj!r}')
        extra = set(obj) - {"components", "params"}
        if extra:
            raise ValueError(f"a reward spec has only 'components' and 'params'; remove {', '.join(sorted(extra))}")
        if "components" not in obj:
            raise ValueError('a reward spec needs "components", e.g. {"components": {"execution_match": 1.0}}')
        return cls(dict(obj["components"]) if isinstance(obj["components"], Mapping) else obj["components"],
                   obj.get("params") or {})

    def to_json(self) -> dict[str, Any]:
        return {"components": dict(self.components), "params": dict(self.params)}

    def score(self, x: ScoreInput) -> tuple[float, dict[str, float]]:
        """(total, per-component unweighted values) for one completion."""
        params = self.resolved_params
        values = {name: COMPONENTS[name](x, params) for name in self.components}
        total = sum(self.components[name] * value for name, value in values.items())
        return total, values
