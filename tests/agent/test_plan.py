"""The plan's settings owner (agent/plan.py): everything that lists settings is derived from it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.goal import goal_schema, plan_goal
from agent.plan import (
    GOAL_KEYS,
    OVERRIDE_KEYS,
    SETTINGS,
    VALUE_KEYS,
    Constraints,
    GoalError,
    Objective,
    Plan,
    reference_markdown,
)

ROOT = Path(__file__).resolve().parents[2]


def test_typed_sections_take_their_defaults_from_the_declarations():
    c, o = Constraints(), Objective()
    for name, setting in SETTINGS.items():
        section = {"constraints": c, "objective": o}.get(setting.section)
        if section is not None:
            assert getattr(section, name) == setting.default, name
    names = {f.name for f in dataclasses.fields(Constraints)} | {f.name for f in dataclasses.fields(Objective)}
    assert names == set(VALUE_KEYS)


def test_every_declared_setting_is_accepted_and_nothing_else():
    assert OVERRIDE_KEYS == set(SETTINGS)
    with pytest.raises(GoalError, match="unknown setting 'eval_subsett'"):
        plan_goal("raise accuracy", {"eval_subsett": 50})


def test_the_llm_goal_schema_is_the_settings_the_goal_may_state():
    props = goal_schema()["properties"]
    assert set(props) == {"understood", "reason", *GOAL_KEYS}
    assert props["metric"]["enum"] == list(SETTINGS["metric"].choices)
    assert props["trials"]["type"] == "integer" and props["budget_minutes"]["type"] == "number"


def test_a_declared_setting_flows_from_the_config_file_to_the_typed_plan(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text("eval_subset = 40\nconfirm_top_k = 1\n")
    plan = plan_goal("raise accuracy, 4 trials", {"config": config})
    assert plan.constraints.eval_subset == 40 and plan.constraints.confirm_top_k == 1
    assert plan.sources["eval_subset"] == "config" and plan.sources["trials"] == "goal"
    config.write_text("eval_subset = 0\n")
    with pytest.raises(GoalError, match="eval_subset must be a whole number >= 1, got 0"):
        plan_goal("raise accuracy", {"config": config})


@pytest.mark.parametrize("text, message", [
    ('launcher_options = "namespace=ml"\n', "launcher_options must be a table of settings"),
    ('[launcher]\nname = "slurm"\n', "launcher 'slurm' is unknown; use local, k8s"),
    ('pruner = "hyperband"\n', "pruner 'hyperband' is unknown; use median, none"),
    ("branching = 1\n", "branching must be true or false, got 1"),
])
def test_bad_config_values_are_one_line_errors(tmp_path: Path, text: str, message: str):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(GoalError, match=message):
        plan_goal("raise accuracy", {"config": config})


def test_a_session_json_reads_back_into_the_same_typed_plan():
    plan = plan_goal("raise dev accuracy of micro-gemma to 60%, 3 trials, 1 at a time in 20 minutes")
    stored = {"id": "s-1", "created_at": 1.0, "status": {"state": "running"}, **plan.to_json()}
    back = Plan.from_json(json.loads(json.dumps(stored)))
    assert back.id == "s-1" and back.constraints == plan.constraints and back.objective == plan.objective
    assert back.constraints.budget_minutes == 20 and back.objective.target == pytest.approx(0.6)


def test_an_older_session_without_a_new_setting_takes_its_default():
    old = Plan(goal="g").to_json()
    del old["constraints"]["eval_subset"]
    old["constraints"]["retired_setting"] = 3  # a setting a newer version dropped
    assert Plan.from_json(old).constraints.eval_subset == SETTINGS["eval_subset"].default


def test_readme_settings_reference_is_generated_from_the_declarations():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- plan-reference:start -->\n", 1)[1].split("\n<!-- plan-reference:end -->", 1)[0]
    assert block.strip() == reference_markdown().strip(), "run `python -m agent.plan --reference`"


def test_every_declared_flag_is_a_start_option():
    help_text = CliRunner().invoke(app, ["start", "--help"], env={"COLUMNS": "200"}).output
    for setting in SETTINGS.values():
        if setting.flag:
            assert setting.flag in help_text, setting.name
