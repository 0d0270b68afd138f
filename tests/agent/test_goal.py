from pathlib import Path

import pytest

from agent.goal import GoalError, Plan, parse_goal_rules, plan_goal


@pytest.fixture(autouse=True)
def _no_api_key(monkeypatch: pytest.MonkeyPatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_the_design_example_goal():
    plan = plan_goal("raise dev execution accuracy of gemma-3-270m on our warehouse questions, "
                     "12 trials, 2 at a time", {})
    c = plan.constraints
    assert (c.trials, c.parallel, c.model) == (12, 2, "google/gemma-3-270m")
    assert plan.objective.metric == "dev_accuracy_after" and plan.objective.target is None
    assert plan.planner == {"name": "offline"} and plan.launcher == {"name": "local"}
    assert plan.sources["trials"] == "goal" and plan.sources["dataset"] == "default"
    assert "learning_rate" in plan.search_space["params"]


@pytest.mark.parametrize("goal, expected", [
    ("get tiny-gemma to 60% dev accuracy within 30 minutes, 6 experiments, 3 in parallel",
     {"model": "builtin:tiny-gemma", "target": 0.6, "budget_minutes": 30, "trials": 6, "parallel": 3}),
    ("improve accuracy by 10 points on spider in 2 hours", {"metric": "gain", "target": 0.1,
                                                            "dataset": "spider", "budget_minutes": 120}),
    ("maximize accuracy above 0.75 with builtin:micro-gemma, parallelism of 4",
     {"target": 0.75, "model": "builtin:micro-gemma", "parallel": 4}),
    ("tune the model from ./weights/gemma on dataset ./data/bird.jsonl", {"model": "./weights/gemma",
                                                                          "dataset": "./data/bird.jsonl"}),
])
def test_regex_rules(goal: str, expected: dict):
    found = parse_goal_rules(goal)
    assert {k: found.get(k) for k in expected} == expected


def test_overrides_win_and_are_recorded():
    plan = plan_goal("raise accuracy, 12 trials, 4 at a time", {"trials": 3, "model": "builtin:micro-gemma",
                                                                 "budget_minutes": 10, "target": 70})
    assert plan.constraints.trials == 3 and plan.sources["trials"] == "override"
    assert plan.constraints.parallel == 3 and any("parallel 4 > trials 3" in n for n in plan.notes)
    assert plan.objective.target == 0.7
    assert plan.constraints.trial_seconds == 10 * 60 * 3 / 3  # fair share of the budget per slot
    assert Plan.from_json(plan.to_json()) == plan


def test_max_steps_override_pins_the_steps():
    plan = plan_goal("raise accuracy", {"max_steps": 2})
    assert "max_steps" not in plan.search_space["params"]
    assert plan.search_space["fixed"]["budget.max_steps"] == 2


@pytest.mark.parametrize("goal, overrides, message", [
    ("", {}, "the goal is empty"),
    ("make me a sandwich", {}, "could not understand the goal"),
    ("lower the accuracy please", {}, "cannot aim to lower it"),
    ("raise accuracy", {"trials": 0}, "trials must be a whole number from 1 to 1000, got 0"),
    ("raise accuracy", {"trials": 5000}, "trials must be a whole number from 1 to 1000"),
    ("raise accuracy", {"trials": True}, "trials must be a whole number"),
    ("raise accuracy", {"target": 150}, "target must be at most 100%"),
    ("raise accuracy", {"budget_minutes": 1e9}, "budget_minutes must be at most 43200"),
    ("raise accuracy", {"planner": "openai"}, "needs OPENAI_API_KEY, or OPENAI_BASE_URL"),
    ("raise accuracy", {"parallel": "two"}, "parallel must be a whole number"),
    ("raise accuracy", {"planner": "gemini"}, "needs an API key: export GEMINI_API_KEY"),
    ("raise accuracy", {"planner": "gpt"}, "planner 'gpt' is unknown; use offline, gemini, openai"),
    ("raise accuracy", {"launcher": "slurm"}, "launcher 'slurm' is unknown"),
    ("raise accuracy", {"metric": "loss"}, "metric 'loss' is unknown"),
    ("raise accuracy", {"colour": "red"}, "unknown setting 'colour'"),
])
def test_goal_errors_say_the_fix(goal: str, overrides: dict, message: str):
    with pytest.raises(GoalError, match=message):
        plan_goal(goal, overrides)


def test_a_bad_search_space_file_is_a_goal_error(tmp_path: Path):
    bad = tmp_path / "space.toml"
    bad.write_text("[params.nope]\nlow = 1\nhigh = 2\n")
    with pytest.raises(GoalError, match="unknown parameter 'nope'"):
        plan_goal("raise accuracy", {"config": str(bad)})


def test_config_file_holds_options_and_search_space_and_flags_win(tmp_path: Path):
    config = tmp_path / "research.toml"
    config.write_text('trials = 6\nparallel = 3\nmodel = "builtin:micro-gemma"\n'
                      '[launcher]\nname = "k8s"\nnamespace = "research"\n'
                      '[params.lora_rank]\nchoices = [0, 16]\n[fixed]\n"eval.limit" = 50\n')
    plan = plan_goal("raise accuracy, 10 trials", {"config": str(config), "parallel": 2})
    assert plan.constraints.trials == 6 and plan.sources["trials"] == "config"  # file beats goal text
    assert plan.constraints.parallel == 2 and plan.sources["parallel"] == "override"
    assert plan.launcher == {"name": "k8s", "namespace": "research"}
    assert plan.search_space["params"]["lora_rank"]["choices"] == [0, 16]
    assert plan.search_space["fixed"] == {"eval.limit": 50}
    json_config = tmp_path / "research.json"
    json_config.write_text('{"trials": 3, "pruner": "none"}')
    assert plan_goal("raise accuracy", {"config": str(json_config)}).pruner == "none"
    json_config.write_text('{"trails": 3}')
    with pytest.raises(GoalError, match="unknown setting 'trails'"):
        plan_goal("raise accuracy", {"config": str(json_config)})
    with pytest.raises(GoalError, match="not found"):
        plan_goal("raise accuracy", {"config": str(tmp_path / "missing.toml")})


def test_a_pretrained_model_gets_the_lora_preset_and_the_tiny_policy_keeps_its_recipe(tmp_path: Path):
    tiny = plan_goal("raise accuracy of tiny-gemma", {}).search_space
    assert tiny["params"]["lora_rank"]["default"] == 0 and tiny["params"]["learning_rate"]["default"] == 2e-4
    assert tiny["fixed"] == {}
    for overrides in ({}, {"model": "./weights/my-gemma"}):
        plan = plan_goal("raise dev execution accuracy of gemma-3-270m, 2 trials", overrides)
        params, fixed = plan.search_space["params"], plan.search_space["fixed"]
        assert params["lora_rank"]["choices"] == [8, 16, 32] and params["lora_rank"]["default"] == 16
        assert params["learning_rate"]["default"] == 3e-5 and params["learning_rate"]["high"] == 2e-4
        assert (params["prompts_per_step"]["default"], params["group_size"]["default"]) == (2, 8)
        assert (params["temperature"]["default"], params["kl_beta"]["default"]) == (0.9, 0.01)
        assert fixed["hparams.sft_steps"] == 40 and fixed["eval.limit"] == 60
        assert any("pretrained checkpoint" in n for n in plan.notes)
    config = tmp_path / "space.toml"
    config.write_text('[params.lora_rank]\nfixed = 0\n[fixed]\n"hparams.sft_steps" = 0\n')
    plan = plan_goal("raise accuracy of gemma-3-270m", {"config": str(config)})
    assert "lora_rank" not in plan.search_space["params"]  # the user's config wins
    assert plan.search_space["fixed"]["hparams.lora_rank"] == 0 and plan.search_space["fixed"]["hparams.sft_steps"] == 0


@pytest.mark.parametrize("goal, quoted, rule", [
    ("raise accuracy, -2 trials", "-2 trials", "trials must be a whole number from 1 to 1000"),
    ("raise accuracy, 2.7 trials", "2.7 trials", "trials must be a whole number"),
    ("raise accuracy, 1e9 trials", "1e9 trials", "trials must be a whole number from 1 to 1000"),
    ("raise accuracy, 1,500 trials", "1,500 trials", "from 1 to 1000"),
    ("raise accuracy, 0 trials", "0 trials", "from 1 to 1000"),
    ("raise accuracy, 8 trials, -2 at a time", "-2 at a time", "parallel trials must be a whole number"),
    ("raise accuracy, 8 trials, 1.5 in parallel", "1.5 in parallel", "parallel trials must be a whole number"),
    ("raise accuracy in -5 minutes", "in -5 minutes", "the time budget must be more than 0"),
    ("raise accuracy within 1e9 hours", "within 1e9 hours", "at most 30 days"),
    ("get tiny-gemma to 150% dev accuracy", "to 150%", "at most 100%"),
    ("improve accuracy by 150 points", "by 150 points", "at most 100 points"),
    ("improve accuracy by -5 points", "by -5 points", "more than 0"),
])
def test_numbers_in_the_goal_are_taken_or_refused_never_changed(goal: str, quoted: str, rule: str):
    with pytest.raises(GoalError) as info:
        plan_goal(goal, {})
    message = str(info.value)
    assert f'the goal says "{quoted}"' in message and rule in message
    assert "\n" not in message


@pytest.mark.parametrize("goal, expected", [
    ("raise accuracy, 1,000 trials, 16 at a time", {"trials": 1000, "parallel": 16}),
    ("raise accuracy, 3 trials, 2 at a time in 30min", {"trials": 3, "parallel": 2, "budget_minutes": 30}),
    ("raise dev execution accuracy of gemma-3-270m, 4 trials", {"trials": 4}),
])
def test_well_written_numbers_are_taken_as_written(goal: str, expected: dict):
    plan = plan_goal(goal, {})
    assert {k: getattr(plan.constraints, k) for k in expected} == expected


@pytest.mark.parametrize("goal, target, metric", [
    ("get tiny-gemma to 60% dev accuracy", 0.6, "dev_accuracy_after"),
    ("get tiny-gemma to 100% dev accuracy", 1.0, "dev_accuracy_after"),
    ("get tiny-gemma to 0.5% dev accuracy", 0.005, "dev_accuracy_after"),  # small, but what was written
    ("improve accuracy by 10 points", 0.1, "gain"),
    ("improve accuracy by 0.5 points", 0.005, "gain"),
    ("improve accuracy, +5 points", 0.05, "gain"),
])
def test_targets_from_the_goal_are_divided_by_100_once(goal: str, target: float, metric: str):
    plan = plan_goal(goal, {})
    assert plan.objective.target == pytest.approx(target) and plan.objective.metric == metric


@pytest.mark.parametrize("flag, target", [(0.6, 0.6), (60, 0.6), (1, 1.0), ("75", 0.75)])
def test_a_target_flag_is_a_fraction_or_a_percentage(flag, target: float):
    assert plan_goal("raise accuracy", {"target": flag}).objective.target == pytest.approx(target)


def test_tracking_from_the_config_table_and_the_flag(tmp_path: Path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tracking]'")
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[tracking]'")
    config = tmp_path / "research.toml"
    config.write_text('[tracking]\nbackends = ["mlflow"]\nmlflow_uri = "http://127.0.0.1:5000"\n'
                      'tensorboard_dir = "tb"\n')
    assert plan_goal("raise accuracy", {"config": str(config)}).tracking == {
        "backends": ["mlflow"], "tensorboard_dir": "tb", "mlflow_uri": "http://127.0.0.1:5000"}
    # the flag names the backends; the table's locations stay; "none" turns tracking off
    flagged = plan_goal("raise accuracy", {"config": str(config), "tracking": "tensorboard, mlflow"})
    assert flagged.tracking["backends"] == ["tensorboard", "mlflow"] and flagged.tracking["tensorboard_dir"] == "tb"
    assert plan_goal("raise accuracy", {"config": str(config), "tracking": "none"}).tracking == {}
    assert plan_goal("raise accuracy", {}).tracking == {}
    restored = Plan.from_json(flagged.to_json())
    assert restored.tracking == flagged.tracking


@pytest.mark.parametrize("tracking, message", [
    ("tensorbord", "tracking backend 'tensorbord' is unknown; use tensorboard, mlflow"),
    ({"backends": ["mlflow"], "uri": "x"}, "tracking setting 'uri' is unknown; use backends, tensorboard_dir, mlflow_uri"),
    ({"backends": 3}, "tracking backends must be a list of names"),
    ({"backends": ["mlflow"], "mlflow_uri": 5}, "tracking mlflow_uri must be a non-empty string"),
])
def test_bad_tracking_settings_are_one_goal_error(tracking, message: str):
    with pytest.raises(GoalError) as err:
        plan_goal("raise accuracy", {"tracking": tracking})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_tracker_that_is_not_installed_is_one_line_with_the_pip_command(monkeypatch: pytest.MonkeyPatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were missing
    with pytest.raises(GoalError, match=r"^tracking: mlflow is not installed; pip install -e '\.\[tracking\]' "
                                        r"\(or pip install mlflow\)$"):
        plan_goal("raise accuracy", {"tracking": "mlflow"})
