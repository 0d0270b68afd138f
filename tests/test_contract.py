"""The pieces derived from the spec's one owner (rl_core/spec.py) agree with it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import sql_env.rewards as rewards
from agent.planners.base import PlanningContext
from agent.planners.llm_planner import proposal_schema
from rl_core import spec as contract
from rl_core.presets import PRESETS
from rl_core.spec import FIELDS, REWARD_SEARCH, TrialSpec
from tools.search_space import SearchSpace, default_params, pretrained_params

ROOT = Path(__file__).resolve().parents[1]


def test_every_field_is_searchable_or_declared_fixed_and_searchable_ones_build_a_param():
    space = SearchSpace()
    for name, info in contract.searchable_fields().items():
        if info.kind == "bool":
            body = {"choices": [True, False]}
        elif info.choices is not None:
            body = {"choices": list(info.choices)}
        else:
            low = info.default if info.default is not None else (info.lo or 0)
            body = {"low": low, "high": low}
        space.apply_overrides({"params": {name: body}})
        assert name in space.params
    fixed_only = {f.path for f in FIELDS.values() if not f.searchable}
    assert "hparams.engine" in fixed_only and "hparams.target_modules" in fixed_only  # declared, not forgotten
    assert all(isinstance(f.searchable, bool) for f in FIELDS.values())


def test_default_space_is_read_off_the_spec():
    params = default_params()
    for name, param in params.items():
        if name.startswith("reward_"):
            assert REWARD_SEARCH[name.removeprefix("reward_")] is not None
            continue
        info = contract.searchable_fields()[name]
        assert info.search is not None
        expected = info.search.start if info.search.start is not None else info.default
        assert param.default == expected, name
    assert {n for n, f in contract.searchable_fields().items() if f.search} <= set(params)


def test_reward_components_are_sql_envs():
    assert set(REWARD_SEARCH) | {"execution_match"} == set(rewards.COMPONENTS)


def test_pretrained_preset_is_valid_and_derived():
    preset = PRESETS["pretrained"]
    spec = {"hparams": {}, "eval": {}}
    for path, value in preset.fixed.items():
        section, key = path.split(".")
        spec[section][key] = value
    TrialSpec.from_json(spec)
    params = pretrained_params()
    for name, search in preset.search.items():
        assert params[name].default == search.start


def test_planner_schema_covers_the_space():
    space = SearchSpace.for_model("gemma-3-270m")
    ctx = PlanningContext(goal="g", objective={"metric": "dev_accuracy_after"}, space=space, round=1, k=1)
    props = proposal_schema(ctx)["properties"]["proposals"]["items"]["properties"]["params"]["properties"]
    assert set(props) == set(space.params)


def test_readme_config_reference_is_generated_from_the_spec():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- spec-reference:start -->\n", 1)[1].split("\n<!-- spec-reference:end -->", 1)[0]
    assert block.strip() == contract.reference_markdown().strip(), "run `python -m rl_core.spec --reference`"
    for path in FIELDS:
        assert f"`{path}`" in block


def test_contracts_doc_names_every_section_and_the_result_schema():
    doc = (ROOT / "docs" / "contracts.md").read_text()
    for section in ("hparams", "reward", "budget", "eval", "init_from"):
        assert f'"{section}"' in doc, section
    assert "schema_version" in doc and "rl_core/trialdir.py" in doc


# Built from parts, so that this file does not hold the paths it looks for and needs no exemption.
OUTSIDE = ["/".join(("..", "shared")), "/".join(("shared", "notes")), "/".join(("docs", "helpers"))]


@pytest.mark.parametrize("pattern", OUTSIDE)
def test_no_file_points_outside_the_repository(pattern):
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    offenders = [p for p in tracked if Path(ROOT / p).is_file() and pattern in (ROOT / p).read_text(errors="ignore")]
    assert offenders == [], f"{pattern} is not in a user's clone: {offenders}"
