"""SQLEnvironment end to end on real DuckDB files: a small dataset folder, then the built-in dev set."""

from __future__ import annotations

import json
import threading
from dataclasses import fields
from pathlib import Path

import pytest

from sql_env.environment import Score, SQLEnvironment
from sql_env.types import Example
from tests.sql_env.exec_fixtures import build_small_db

EXAMPLES = [
    Example("q1", "company", "How many employees are there?", "SELECT count(*) FROM employees"),
    Example("q2", "company", "List department names alphabetically.", "SELECT name FROM departments ORDER BY name"),
    Example("q3", "company", "Which cities have departments?", "SELECT DISTINCT city FROM departments WHERE city IS NOT NULL"),
    Example("q4", "company", "Department of each employee in Lyon.",
            "SELECT e.name, d.name FROM employees e JOIN departments d ON e.dept_id = d.id WHERE d.city = 'Lyon'"),
]


def fence(sql: str) -> str:
    return f"```sql\n{sql}\n```"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dataset")
    (folder / "databases").mkdir()
    build_small_db(folder / "databases" / "company.duckdb")
    (folder / "dev.jsonl").write_text("".join(json.dumps(e.to_json()) + "\n" for e in EXAMPLES))
    (folder / "manifest.json").write_text(json.dumps({"name": "tiny", "splits": {"dev": len(EXAMPLES)}}))
    return folder


@pytest.fixture(params=["thread", "process"])
def env(dataset: Path, request: pytest.FixtureRequest):
    """Both scoring backends: every test on this fixture holds for each of them."""
    with SQLEnvironment(str(dataset), timeout_s=0.3, workers=2, backend=request.param) as environment:
        yield environment


def test_score_has_the_fields_of_rl_core_step_result() -> None:
    from rl_core.env import StepResult

    assert [f.name for f in fields(Score)] == [f.name for f in fields(StepResult)]


def test_ids_prompt_and_question(env: SQLEnvironment) -> None:
    assert env.example_ids("dev") == ["q1", "q2", "q3", "q4"]
    prompt = env.prompt("q2")
    assert "List department names alphabetically." in prompt
    assert "CREATE TABLE departments" in prompt and "CREATE TABLE employees" in prompt
    assert env.prompt("q2") is prompt  # rendered once
    assert env.question("q4") == "Department of each employee in Lyon."


def test_bad_settings_fail_at_construction_with_the_fix(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        SQLEnvironment("no-such-dataset")
    with pytest.raises(ValueError, match="not a dataset folder"):
        SQLEnvironment(str(tmp_path))
    with pytest.raises(ValueError, match="'plain' or 'chat'"):
        SQLEnvironment(str(dataset), prompt_style="fancy")
    with pytest.raises(ValueError, match="chat template"):
        SQLEnvironment(str(dataset), prompt_style="chat")
    with pytest.raises(ValueError, match="unknown reward component 'exact'"):
        SQLEnvironment(str(dataset), reward={"components": {"exact": 1}})
    with pytest.raises(ValueError, match="'thread' or 'process'"):
        SQLEnvironment(str(dataset), backend="fork")


def test_unknown_example_says_where_ids_come_from(env: SQLEnvironment) -> None:
    with pytest.raises(KeyError, match="example_ids"):
        env.prompt("nope")
    with pytest.raises(KeyError, match="example_ids"):
        env.score("nope", ["SELECT 1"])


def test_correct_wrong_and_failing_completions(env: SQLEnvironment) -> None:
    completions = [
        fence("SELECT count(*) FROM employees"),
        fence("SELECT count(id) AS n FROM employees;"),  # another way to the same answer
        fence("SELECT count(*) FROM departments"),  # runs, wrong answer
        fence("SELECT count(*) FROM staff"),
        fence("SELEC count(*) FROM employees"),
        fence("DROP TABLE employees"),
        fence("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"),
    ]
    scores = env.score("q1", completions)
    assert [s.correct for s in scores] == [True, True, False, False, False, False, False]
    assert [s.reward for s in scores] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert [s.metrics["status"] for s in scores] == [
        "ok", "ok", "ok", "schema_error", "syntax_error", "forbidden", "timeout"]
    assert scores[0].metrics["sql"] == "SELECT count(*) FROM employees"
    assert scores[0].metrics["error"] is None and "staff" in scores[3].metrics["error"]
    assert all(s.components == {"execution_match": s.reward} for s in scores)
    assert env.score("q1", [fence("SELECT 1 FROM employees LIMIT 0")])[0].metrics["status"] == "ok"


def test_order_matters_only_when_gold_orders(env: SQLEnvironment) -> None:
    ordered_gold = env.score("q2", [fence("SELECT name FROM departments ORDER BY name DESC")])[0]
    assert ordered_gold.correct is False
    unordered_gold = env.score("q3", [fence("SELECT DISTINCT city FROM departments WHERE city IS NOT NULL ORDER BY city DESC")])[0]
    assert unordered_gold.correct is True
    permuted = env.score("q4", [fence("SELECT d.name, e.name FROM departments d JOIN employees e ON e.dept_id = d.id WHERE d.city = 'Lyon'")])[0]
    assert permuted.correct is True  # a column permutation, as in Spider


def test_gold_is_computed_once_and_duplicates_run_once(env: SQLEnvironment) -> None:
    gold = env.gold("q4")
    assert gold.status == "ok" and len(gold.rows) == 200
    slow = fence("SELECT count(*) FROM employees a, employees b, employees c, employees d")
    before = env.executions_run
    scores = env.score("q1", [slow] * 8)
    assert env.executions_run == before + 2  # the gold of q1 and one run of the repeated SQL
    assert {s.metrics["status"] for s in scores} == {"timeout"}
    assert env.gold("q4") is gold
    if env.backend == "process":
        return  # the cache below is per worker process, and the next call may go to the other one
    env.score("q1", [slow, fence("SELECT count(*) FROM employees")])
    assert env.executions_run == before + 3  # the slow query came from the cache


def test_weighted_components_and_breakdown(dataset: Path) -> None:
    spec = {"components": {"execution_match": 1.0, "executes": 0.25, "partial_credit": 0.5, "schema_link": 0.0}}
    with SQLEnvironment(str(dataset), reward=spec, workers=1) as env:
        right, wrong, broken = env.score("q3", [
            fence("SELECT DISTINCT city FROM departments WHERE city IS NOT NULL"),
            fence("SELECT city FROM departments WHERE city = 'Lyon'"),  # rows: 2x Lyon vs {Lyon, Porto}
            fence("SELECT town FROM departments"),
        ])
    assert right.reward == 1.75 and right.components["schema_link"] == 1.0
    assert wrong.components == {"execution_match": 0.0, "executes": 1.0, "partial_credit": 0.5, "schema_link": 1.0}
    assert wrong.reward == 0.5
    assert broken.reward == 0.0 and broken.components["executes"] == 0.0


def test_bird_mode_compares_sets(dataset: Path) -> None:
    twice = fence("SELECT city FROM departments WHERE city IS NOT NULL")  # Lyon twice, Porto once
    with SQLEnvironment(str(dataset), reward={"components": {"execution_match": 1}, "params": {"match_mode": "bird"}}) as env:
        assert env.score("q3", [twice])[0].correct is True
    with SQLEnvironment(str(dataset)) as env:
        assert env.score("q3", [twice])[0].correct is False


def test_concurrent_callers_get_consistent_verdicts(env: SQLEnvironment) -> None:
    results: list[list[bool]] = []

    def worker() -> None:
        for _ in range(20):
            results.append([s.correct for s in env.score("q1", [fence("SELECT count(*) FROM employees"), fence("SELECT 0")])])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[True, False]] * 80


def test_score_many_regroups_in_order(env: SQLEnvironment) -> None:
    out = env.score_many([("q1", [fence("SELECT count(*) FROM employees")]), ("q2", [fence("SELECT 1"), fence("SELECT name FROM departments ORDER BY name")])])
    assert [[s.correct for s in group] for group in out] == [[True], [False, True]]


def test_builtin_dev_gold_sql_scores_as_correct(builtin_dir: Path) -> None:
    with SQLEnvironment(str(builtin_dir), workers=2) as env:
        ids = env.example_ids("dev")
        assert len(ids) >= 300
        sample = ids[:: max(1, len(ids) // 60)]
        groups = [(i, [fence(env.example(i).gold_sql), fence("SELECT 1 AS x WHERE false")]) for i in sample]
        for example_id, (gold, empty) in zip(sample, env.score_many(groups), strict=True):
            assert gold.correct and gold.reward == 1.0, (example_id, gold.metrics)
            assert not empty.correct, example_id  # every built-in gold returns at least one row
        assert env.question(sample[0]) in env.prompt(sample[0])


def test_format_rewards_sql_where_the_prompt_asked_for_it(dataset: Path) -> None:
    with SQLEnvironment(str(dataset), reward={"components": {"format": 1.0, "executes": 1.0}}) as env:
        bare, fenced, chatty, prose, empty = env.score("q1", [
            " SELECT count(*) FROM employees;\n-- Question: next",  # plain style: right after `-- SQL:`
            "```sql\nSELECT count(*) FROM employees\n```",
            "Here is the query:\nSELECT count(*) FROM employees",
            "There are many employees.",
            "",
        ])
    assert [s.components["format"] for s in (bare, fenced, chatty, prose, empty)] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert chatty.components["executes"] == 1.0 and chatty.metrics["sql"] == "SELECT count(*) FROM employees"
    assert prose.metrics == {"status": "syntax_error", "sql": None, "exec_s": 0.0, "error": "no SQL found in the completion"}
    assert prose.reward == 0.0 and empty.reward == 0.0


def test_broken_gold_is_reported_not_raised(dataset: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(dataset, folder)
    bad = Example("b1", "company", "Anything?", "SELECT nothing FROM nowhere")
    (folder / "dev.jsonl").write_text(json.dumps(bad.to_json()) + "\n")
    with SQLEnvironment(str(folder)) as env:
        (score,) = env.score("b1", [fence("SELECT 1")])
        assert score.correct is False and score.metrics["status"] == "ok"
        assert score.metrics["gold_error"].startswith("schema_error: ")
        (odd,) = env.score("b1", [None])  # type: ignore[list-item]
        assert odd.metrics["status"] == "syntax_error" and odd.reward == 0.0


def test_plain_prompts_stop_where_a_base_model_would_run_on(env: SQLEnvironment) -> None:
    """A rollout cut at a stop string still scores as the one statement before it."""
    assert env.stop_strings == (";", "\n--", "\n\n")
    ids = env.example_ids("dev")
    gold_sql = env.example(ids[0]).gold_sql
    run_on = gold_sql + "\n--"  # what an engine stopping on "\n--" returns
    assert env.score(ids[0], [run_on])[0].correct
