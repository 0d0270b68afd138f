import json
import subprocess
import sys

import pytest

from rl_core.spec import SpecError, TrialSpec

CONTRACT_EXAMPLE = {
    "trial_id": "t0003", "session": "s-20261125-181500", "model": "builtin:tiny-gemma", "dataset": "builtin",
    "train_split": "train",
    "hparams": {
        "learning_rate": 1e-4, "warmup_steps": 10, "schedule": "constant", "lora_rank": 0, "lora_alpha": 32,
        "lora_dropout": 0.0, "target_modules": "all-linear", "kl_beta": 0.0, "group_size": 8,
        "prompts_per_step": 8, "clip_eps_low": 0.2, "clip_eps_high": 0.28, "ppo_epochs": 2, "temperature": 0.7,
        "top_p": 1.0, "max_new_tokens": 96, "loss_type": "grpo", "scale_rewards": False,
        "dynamic_sampling": True, "grad_clip": 1.0, "weight_decay": 0.0, "grad_accum": 1, "sft_steps": 0,
    },
    "reward": {"components": {"execution_match": 1.0}, "params": {}},
    "seed": 0,
    "budget": {"max_steps": 200, "max_seconds": 480},
    "eval": {"split": "dev", "limit": 400, "every_steps": 0, "pass_k": 0, "samples": 32},
}


def test_contract_example_round_trips():
    spec = TrialSpec.from_json(CONTRACT_EXAMPLE)
    assert spec.hparams.group_size == 8 and spec.reward.components == {"execution_match": 1.0}
    again = TrialSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec
    for key, value in CONTRACT_EXAMPLE["hparams"].items():
        assert again.to_json()["hparams"][key] == value


def test_defaults_are_the_calibrated_corner():
    hp = TrialSpec().hparams
    assert (hp.temperature, hp.learning_rate, hp.lora_rank, hp.ppo_epochs, hp.loss_type) == (0.7, 2e-4, 0, 2, "dapo")
    assert (hp.scale_rewards, hp.dynamic_sampling, hp.clip_eps_low, hp.clip_eps_high) == (False, True, 0.2, 0.28)


@pytest.mark.parametrize(("patch", "message"), [
    ({"hparams": {"group_size": 1}}, "at least 2 completions per prompt"),
    ({"hparams": {"loss_type": "ppo"}}, "loss_type must be one of"),
    ({"hparams": {"learning_rate": -1}}, "learning_rate must be >"),
    ({"hparams": {"lr": 1e-4}}, "unknown key 'hparams.lr'"),
    ({"hparams": {"grad_accum": 3}}, "must divide prompts_per_step"),
    ({"hparams": {"temperature": "hot"}}, "temperature must be a number"),
    ({"hparams": {"ppo_epochs": 1.5}}, "ppo_epochs must be an integer"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"budget": {"max_steps": None, "max_seconds": None}}, "set at least one"),
    ({"eval": {"split": "train"}}, "held-out split"),
    ({"eval": {"report_split": "train"}}, "report on a held-out split"),
    ({"eval": {"split": "dev", "report_split": "dev"}}, "report on another split"),
    ({"reward": {"components": {}}}, "execution_match"),
    ({"trial_id": "a/b"}, "trial_id"),
    ({"device": "gpu"}, "device must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\""),
    ({"hparams": {"schedule": "cosine"}, "budget": {"max_steps": None, "max_seconds": 60}}, "cosine\" needs budget.max_steps"),
])
def test_bad_specs_fail_with_a_message_naming_the_fix(patch, message):
    data = json.loads(json.dumps(CONTRACT_EXAMPLE))
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    with pytest.raises(SpecError, match=message):
        TrialSpec.from_json(data)


def test_load_reports_unreadable_and_invalid_json(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec"):
        TrialSpec.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        TrialSpec.load(bad)
    good = tmp_path / "good.json"
    TrialSpec(trial_id="x").save(good)
    assert TrialSpec.load(good).trial_id == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_spec_module_does_not_import_torch():
    code = "import sys, rl_core.spec; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_underscore_keys_are_comments_and_the_example_spec_is_valid():
    data = {"_comment": "top", "hparams": {"_comment": "inner", "group_size": 4}}
    assert TrialSpec.from_json(data).hparams.group_size == 4
    from pathlib import Path

    example = TrialSpec.load(Path(__file__).parents[2] / "examples" / "trial.json")
    assert example.model == "builtin:tiny-gemma" and example.budget.max_steps


def test_the_pretrained_preset_is_the_shipped_gemma_recipe():
    """examples/gemma-270m-trial.json (the documented 60-minute run) and the pretrained preset's
    defaults are the same recipe: a change to one without the other fails here."""
    from pathlib import Path

    from rl_core.presets import PRESETS

    example = TrialSpec.load(Path(__file__).parents[2] / "examples" / "gemma-270m-trial.json").to_json()
    preset = PRESETS["pretrained"]
    for path, value in preset.fixed.items():
        section, name = path.split(".")
        if section == "hparams":
            assert example["hparams"][name] == value, path
    for name, search in preset.search.items():
        if name == "max_steps":  # the example budgets seconds (2,400 s, ~110-120 steps on 2 cores)
            assert 100 <= search.start <= 130 and example["budget"]["max_seconds"] == 2400
        elif name.startswith("reward_"):
            assert example["reward"]["components"][name.removeprefix("reward_")] == search.start, name
        else:
            assert example["hparams"][name] == search.start, name
