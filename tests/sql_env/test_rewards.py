"""Reward components as pure functions with exact expected values; RewardSpec validation and JSON."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from sql_env.rewards import COMPONENTS, RewardParams, RewardSpec, ScoreInput, sql_identifiers
from sql_env.types import Execution

GOLD_SQL = "SELECT d.name, count(*) AS n FROM employees e JOIN departments d ON e.dept_id = d.id GROUP BY d.name"
GOLD = Execution("ok", rows=[("Sales", 100), ("Research", 100), ("Support", 100)], columns=["name", "n"])
P = RewardParams()


def make(
    rows=None, *, status="ok", sql="SELECT 1", correct=False, completion="SELECT 1", format_ok=True, gold=GOLD
) -> ScoreInput:
    execution = None if sql is None else Execution(status, rows=list(rows or []))
    return ScoreInput(completion, sql, format_ok, execution, gold, GOLD_SQL, correct)


# -- each component, exact values ------------------------------------------------------------------
def test_execution_match_is_binary() -> None:
    assert COMPONENTS["execution_match"](make(correct=True), P) == 1.0
    assert COMPONENTS["execution_match"](make(correct=False), P) == 0.0


@pytest.mark.parametrize(
    ("status", "sql", "expected"),
    [("ok", "SELECT 1", 1.0), ("syntax_error", "SELEC", 0.0), ("timeout", "SELECT 1", 0.0), ("ok", None, 0.0)],
)
def test_executes(status: str, sql: str | None, expected: float) -> None:
    assert COMPONENTS["executes"](make(status=status, sql=sql), P) == expected


def test_format() -> None:
    assert COMPONENTS["format"](make(format_ok=True), P) == 1.0
    assert COMPONENTS["format"](make(format_ok=False), P) == 0.0


@pytest.mark.parametrize(
    ("rows", "unit", "expected"),
    [
        ([("Sales", 100)], "rows", 0.5),  # P=1, R=1/3 -> 2*1/(1+3)
        ([("Sales", 100), ("Legal", 0), ("Legal", 1), ("Legal", 2), ("Legal", 3)], "rows", 0.25),  # 2*1/(5+3)
        ([(100, "Sales"), (100, "Research")], "rows", 0.8),  # column order ignored: 2*2/(2+3)
        ([("Sales", Decimal("100.0"))], "rows", 0.5),  # values normalised
        ([("Nope", 7)], "rows", 0.0),
        ([], "rows", 0.0),
        ([("Sales", 100)], "cells", 0.5),  # cells: pred {Sales, 100}, gold 6 cells, overlap 2 -> 4/8
        ([("Sales", 1), ("Legal", 2)], "cells", 0.2),  # 4 cells vs 6, overlap 1 -> 2/10
    ],
)
def test_partial_credit_f1(rows, unit: str, expected: float) -> None:
    assert COMPONENTS["partial_credit"](make(rows), RewardParams(partial_credit_unit=unit)) == expected


def test_partial_credit_edges() -> None:
    assert COMPONENTS["partial_credit"](make([("x", 1)], correct=True), P) == 1.0
    assert COMPONENTS["partial_credit"](make(status="runtime_error"), P) == 0.0
    assert COMPONENTS["partial_credit"](make(sql=None), P) == 0.0
    failed_gold = Execution("timeout", error="slow")
    assert COMPONENTS["partial_credit"](make([("Sales", 100)], gold=failed_gold), P) == 0.0


@pytest.mark.parametrize(
    ("length", "free", "scale", "expected"),
    [(0, 200, 200, 0.0), (200, 200, 200, 0.0), (250, 200, 200, -0.25), (300, 200, 100, -1.0), (10_000, 200, 200, -1.0), (3, 0, 4, -0.75)],
)
def test_length_penalty(length: int, free: int, scale: int, expected: float) -> None:
    params = RewardParams(length_free_chars=free, length_scale_chars=scale)
    assert COMPONENTS["length_penalty"](make(completion="x" * length), params) == expected


def test_sql_identifiers_ignore_aliases_and_ctes() -> None:
    assert sql_identifiers(GOLD_SQL) == {"t:employees", "t:departments", "c:name", "c:dept_id", "c:id"}
    assert sql_identifiers("WITH x AS (SELECT id FROM t) SELECT id AS k FROM x ORDER BY k") == {"t:t", "c:id"}
    assert sql_identifiers("SELEC FROM (((") is None


def test_schema_link_f1() -> None:
    # pred uses {employees, name}; gold uses 5 identifiers; overlap 2 -> 2*2/(2+5)
    pred = make(sql="SELECT name FROM employees")
    assert COMPONENTS["schema_link"](pred, P) == 4 / 7
    assert COMPONENTS["schema_link"](make(sql=GOLD_SQL), P) == 1.0
    assert COMPONENTS["schema_link"](make(sql="SELECT 1"), P) == 0.0
    assert COMPONENTS["schema_link"](make(sql=None), P) == 0.0
    assert COMPONENTS["schema_link"](make(sql="NOT SQL ((("), P) == 0.0


# -- the spec -------------------------------------------------------------------------------------
def test_total_is_weighted_sum_with_unweighted_breakdown() -> None:
    spec = RewardSpec(
        {"execution_match": 1.0, "executes": 0.25, "format": 0.125, "partial_credit": 0.5, "length_penalty": 0.5},
        {"length_free_chars": 0, "length_scale_chars": 64},
    )
    x = make([("Sales", 100)], completion="x" * 16)
    total, parts = spec.score(x)
    assert parts == {"execution_match": 0.0, "executes": 1.0, "format": 1.0, "partial_credit": 0.5, "length_penalty": -0.25}
    assert total == 0.25 + 0.125 + 0.25 - 0.125


def test_default_spec_is_binary_execution_match() -> None:
    spec = RewardSpec.from_json(None)
    assert spec.score(make(correct=True)) == (1.0, {"execution_match": 1.0})
    assert spec.score(make(correct=False)) == (0.0, {"execution_match": 0.0})


def test_spec_round_trips_through_json() -> None:
    spec = RewardSpec({"execution_match": 1, "schema_link": 0.1}, {"match_mode": "bird"})
    again = RewardSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec and again.resolved_params.match_mode == "bird"
    assert again.components == {"execution_match": 1.0, "schema_link": 0.1}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"components": {"exec_match": 1.0}}, "unknown reward component 'exec_match'; known: executes, execution_match, format, length_penalty, partial_credit, schema_link"),
        ({"components": {}}, "at least one component"),
        ({"components": {"executes": "1"}}, "must be a finite number"),
        ({"components": {"executes": float("nan")}}, "must be a finite number"),
        ({"components": {"executes": True}}, "must be a finite number"),
        ({"components": {"executes": 1}, "params": {"mode": "bird"}}, "unknown reward param 'mode'; known: match_mode"),
        ({"components": {"executes": 1}, "params": {"match_mode": "exact"}}, "'spider' or 'bird'"),
        ({"components": {"executes": 1}, "params": {"partial_credit_unit": "tables"}}, "'rows' or 'cells'"),
        ({"components": {"executes": 1}, "params": {"length_scale_chars": 0}}, "must be > 0"),
        ({"components": {"executes": 1}, "params": {"length_free_chars": -1}}, "whole number >= 0"),
        ({"components": {"executes": 1}, "weights": {}}, "remove weights"),
        ({"params": {}}, 'needs "components"'),
        ("execution_match", "a reward spec is an object"),
    ],
)
def test_spec_validation_says_the_fix(obj, message: str) -> None:
    with pytest.raises(ValueError) as info:
        RewardSpec.from_json(obj)
    assert message in str(info.value)
