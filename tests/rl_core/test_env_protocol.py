"""rl_core.env.Environment declares every member rl_core calls on an environment, rl_core calls them
without probing, and sql_env.SQLEnvironment (which never imports rl_core) has each of them."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import pytest

from rl_core.env import BasicEnvironment, Environment, StepResult
from sql_env.environment import SQLEnvironment
from sql_env.types import Example
from tests.sql_env.exec_fixtures import build_small_db

RL_CORE = Path(__file__).resolve().parents[2] / "rl_core"
MEMBERS = sorted(n for n in vars(Environment) if not n.startswith("_"))


def missing_members(cls: type) -> list[str]:
    """Protocol members `cls` lacks or declares differently (a property as a method, other parameters)."""
    out, absent = [], object()
    for name in MEMBERS:
        want, have = inspect.getattr_static(Environment, name), inspect.getattr_static(cls, name, absent)
        if have is absent:
            out.append(name)
        elif isinstance(want, property):
            if callable(have) and not isinstance(have, property):
                out.append(f"{name} (a method; the protocol has an attribute)")
        elif not callable(have):
            out.append(f"{name} (not a method)")
        elif list(inspect.signature(have).parameters) != list(inspect.signature(want).parameters):
            out.append(f"{name}{inspect.signature(have)} (the protocol has {name}{inspect.signature(want)})")
    return out


def _env_uses(tree: ast.AST) -> tuple[set[str], list[str]]:
    """(attributes read off `env` / `self.env`, getattr/hasattr calls on them) in one module."""
    def is_env(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id == "env") or (isinstance(node, ast.Attribute) and node.attr == "env")

    attrs, probes = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_env(node.value):
            attrs.add(node.attr)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and node.args and is_env(node.args[0])):
            probes.append(f"line {node.lineno}: {ast.unparse(node)}")
    return attrs, probes


def test_the_protocol_declares_what_the_trainer_and_the_runner_need():
    assert {"stop_strings", "example_ids", "prompt", "question", "score", "score_many", "close"} <= set(MEMBERS)


def test_sql_environment_has_every_member_of_the_protocol(tmp_path):
    assert missing_members(SQLEnvironment) == []
    (tmp_path / "databases").mkdir()
    build_small_db(tmp_path / "databases" / "company.duckdb")
    ex = Example("q1", "company", "How many employees are there?", "SELECT count(*) FROM employees")
    (tmp_path / "dev.jsonl").write_text(json.dumps(ex.to_json()) + "\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "tiny", "splits": {"dev": 1}}))
    with SQLEnvironment(str(tmp_path), backend="thread", workers=1) as env:
        assert isinstance(env, Environment)
        assert env.question("q1") == ex.question and ";" in env.stop_strings
        (right, wrong), = env.score_many([("q1", [ex.gold_sql, "SELECT 1"])])
        assert right.correct and not wrong.correct


def test_the_check_names_a_missing_or_different_member():
    class NoClose(BasicEnvironment):
        close = None  # type: ignore[assignment]

    class OtherScore(BasicEnvironment):
        def score(self, example_id, texts):  # the protocol's parameter is `completions`
            return []

    class Bare:
        def prompt(self, example_id):
            return ""

    assert missing_members(NoClose) == ["close (not a method)"]
    assert missing_members(OtherScore) == [
        "score(self, example_id, texts) (the protocol has score(self, example_id: 'str', completions: "
        "'Sequence[str]') -> 'Sequence[StepResult]')"]
    assert set(missing_members(Bare)) == set(MEMBERS) - {"prompt"}
    assert not isinstance(Bare(), Environment)


def test_a_toy_environment_gets_the_rest_from_basic_environment():
    class Echo(BasicEnvironment):
        def example_ids(self, split):
            return ["a", "b"]

        def prompt(self, example_id):
            return f"say {example_id}:"

        def score(self, example_id, completions):
            return [StepResult(float(c == example_id)) for c in completions]

    env = Echo()
    assert missing_members(Echo) == [] and isinstance(env, Environment)
    assert env.stop_strings == () and env.question("a") == "say a:"
    assert [[r.reward for r in g] for g in env.score_many([("a", ["a", "x"]), ("b", ["b"])])] == [[1.0, 0.0], [1.0]]
    env.close()


@pytest.mark.parametrize("module", sorted(p.name for p in RL_CORE.glob("*.py")))
def test_rl_core_calls_only_declared_members_and_never_probes(module):
    attrs, probes = _env_uses(ast.parse((RL_CORE / module).read_text()))
    assert probes == [], f"rl_core/{module} probes the environment; declare the member in rl_core/env.py"
    assert attrs <= set(MEMBERS), f"rl_core/{module} calls {sorted(attrs - set(MEMBERS))} not in rl_core.env.Environment"
