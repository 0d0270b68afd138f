"""The time limit holds for every query: one huge value that DuckDB cannot interrupt (it checks for
an interrupt between vectors) is stopped by killing its worker process, and the rest is scored."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sql_env.environment import SQLEnvironment
from tests.sql_env.test_environment import dataset, fence  # noqa: F401  (the module-scoped fixture)

TIMEOUT_S = 0.3
RIGHT = fence("SELECT count(*) FROM employees")
WRONG = fence("SELECT count(*) FROM departments")
# Each runs for seconds inside one DuckDB function call (measured 4-18 s with a 0.5 s timeout on the
# thread backend), and none needs more than ~2 GB before its worker is stopped.
HUGE_VALUES = [
    "SELECT length(repeat('x', 2000000000))",
    "SELECT list_sort(range(25000000))[1]",
    "SELECT md5(repeat('ab', 1000000000))",
    "SELECT length(repeat('x', 2000000000)) FROM employees LIMIT 1",
]


@pytest.fixture(scope="module")
def env(dataset: Path):  # noqa: F811
    """The trainer's default backend, as the trainer builds it (only the timeout shortened)."""
    with SQLEnvironment(str(dataset), timeout_s=TIMEOUT_S, workers=1) as environment:
        environment.score("q1", [RIGHT])  # workers up, gold cached: the timing below is the query's
        yield environment


@pytest.mark.parametrize("sql", HUGE_VALUES)
def test_a_huge_value_is_a_timeout_within_the_limit_and_the_group_is_scored(env: SQLEnvironment, sql: str) -> None:
    restarts = env.worker_restarts
    start = time.perf_counter()
    scores = env.score("q1", [RIGHT, fence(sql), WRONG])
    elapsed = time.perf_counter() - start
    assert [s.metrics["status"] for s in scores] == ["ok", "timeout", "ok"]
    assert [s.correct for s in scores] == [True, False, False]
    held = scores[1].metrics["exec_s"]
    assert TIMEOUT_S <= held <= TIMEOUT_S + 1.0 + 0.5, f"the query held its worker {held:.2f} s"
    assert "stopped" in scores[1].metrics["error"]
    assert env.worker_restarts == restarts + 1
    assert elapsed < 10  # the kill, a fresh worker and the rest of the group; not DuckDB's own seconds


def test_a_stuck_query_is_remembered_and_costs_its_limit_once(env: SQLEnvironment) -> None:
    sql = fence("SELECT length(repeat('y', 2000000000))")
    env.score("q1", [sql])
    restarts = env.worker_restarts
    start = time.perf_counter()
    (again,) = env.score("q1", [sql])
    assert again.metrics["status"] == "timeout" and time.perf_counter() - start < 1.0
    assert env.worker_restarts == restarts


def test_an_interruptible_runaway_is_a_plain_timeout_without_a_restart(env: SQLEnvironment) -> None:
    restarts = env.worker_restarts
    runaway = fence("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r")
    scores = env.score("q1", [runaway, RIGHT])
    assert [s.metrics["status"] for s in scores] == ["timeout", "ok"] and scores[1].correct
    assert env.worker_restarts == restarts


def test_the_default_backend_is_the_one_whose_limit_holds(dataset: Path) -> None:  # noqa: F811
    with SQLEnvironment(str(dataset)) as default:
        assert default.backend == "process"
