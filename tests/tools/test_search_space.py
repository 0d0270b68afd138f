from pathlib import Path

import optuna
import pytest

from rl_core.spec import TrialSpec
from tools.search_space import SearchSpace, SearchSpaceError


def test_defaults_are_valid_optuna_distributions_and_a_valid_spec():
    space = SearchSpace()
    dists = space.distributions()
    assert dists["learning_rate"].log and dists["learning_rate"].low == 1e-5
    assert 0.0 in dists["kl_beta"].choices  # KL off must be searchable
    for name, value in space.defaults().items():
        assert dists[name]._contains(dists[name].to_internal_repr(value)), name
    parsed = space.build_spec(space.defaults(), base={"trial_id": "t0000", "session": "s-1",
                                                      "model": "builtin:micro-gemma"})
    assert isinstance(parsed, TrialSpec)
    assert parsed.hparams.learning_rate == 2e-4
    assert parsed.budget.max_steps == 60
    assert parsed.reward.components == {"execution_match": 1.0}  # zero weights are dropped


def test_reward_params_land_in_reward_components_and_precedence(tmp_path: Path):
    toml = tmp_path / "space.toml"
    toml.write_text('[fixed]\n"eval.limit" = 50\n"hparams.max_new_tokens" = 48\n')
    space = SearchSpace.load(toml)
    spec = space.build_spec({"reward_executes": 0.1, "reward_partial_credit": 0.3, "max_steps": 30},
                            base={"trial_id": "t1", "session": "s", "eval.limit": 20}).to_json()
    assert spec["reward"]["components"] == {"execution_match": 1.0, "executes": 0.1, "partial_credit": 0.3}
    assert spec["budget"]["max_steps"] == 30
    assert spec["eval"]["limit"] == 20  # session value beats [fixed]
    assert spec["hparams"]["max_new_tokens"] == 48
    TrialSpec.from_json(spec)


def test_toml_overrides_ranges_choices_and_pins(tmp_path: Path):
    toml = tmp_path / "space.toml"
    toml.write_text(
        "[params.learning_rate]\nlow = 2e-5\nhigh = 3e-4\nlog = true\n"
        "[params.lora_rank]\nchoices = [0, 16]\n"
        "[params.kl_beta]\nfixed = 0.01\n"
        "[params.warmup_steps]\nlow = 0\nhigh = 20\n")
    space = SearchSpace.load(toml)
    assert (space.params["learning_rate"].low, space.params["learning_rate"].high) == (2e-5, 3e-4)
    assert space.params["lora_rank"].choices == [0, 16]
    assert "kl_beta" not in space.params and space.fixed["hparams.kl_beta"] == 0.01
    assert space.params["warmup_steps"].kind == "int"
    again = SearchSpace.from_json(space.to_json())  # what session.json stores
    assert again.distributions() == space.distributions() and again.fixed == space.fixed


@pytest.mark.parametrize("text, message", [
    ("[params.bogus]\nlow = 1\nhigh = 2\n", "unknown parameter 'bogus'"),
    ("[params.learning_rate]\nlow = 0.0\nhigh = 1e-3\nlog = true\n", "low 0.0 is not allowed .*must be > 0"),
    ("[params.warmup_steps]\nlow = 0\nhigh = 20\nlog = true\n", "log-scale range needs low > 0"),
    ("[params.learning_rate]\nlow = 1e-3\nhigh = 1e-5\n", "needs low <= high"),
    ("[searchspace]\nx = 1\n", "unknown section"),
    ("[params.lora_rank\n", "not valid TOML"),
])
def test_bad_toml_gets_a_message_that_says_the_fix(tmp_path: Path, text: str, message: str):
    toml = tmp_path / "space.toml"
    toml.write_text(text)
    with pytest.raises(SearchSpaceError, match=message):
        SearchSpace.load(toml)


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SearchSpaceError, match="not found"):
        SearchSpace.load(tmp_path / "nope.toml")


def test_validate_clamps_and_rejects_with_reasons():
    clean, notes = SearchSpace().validate({
        "learning_rate": 0.5, "lora_rank": 12, "loss_type": "ppo", "temperature": 0.8, "momentum": 0.9,
        "max_steps": 33})
    assert clean["learning_rate"] == 1e-3 and clean["lora_rank"] in (8, 16) and clean["temperature"] == 0.8
    assert clean["max_steps"] == 30  # int step 10
    assert "loss_type" not in clean and "momentum" not in clean
    joined = " | ".join(notes)
    assert "clamped to 0.001" in joined and "nearest" in joined and "'ppo' is not one of" in joined
    assert "momentum is not a searchable parameter" in joined


def test_enqueued_proposal_fills_the_rest_from_the_sampler():
    space = SearchSpace()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"learning_rate": 3e-4})
    trial = study.ask(fixed_distributions=space.distributions())
    assert trial.params["learning_rate"] == 3e-4
    assert set(trial.params) == set(space.params)
