"""One conformance suite for every planner, then each planner's own behaviour. Gemini is the real
google-genai client talking to a local server that speaks the generateContent REST API."""

from __future__ import annotations

import pytest

from agent.goal import GoalError, plan_goal
from agent.planners.base import PlanningContext
from agent.planners.gemini import GeminiPlanner
from agent.planners.offline import OfflinePlanner
from tests.agent.conftest import gemini_config
from tools.search_space import SearchSpace


def _trial(tid: str, score: float | None, status: str = "succeeded", **summary) -> dict:
    params = SearchSpace().defaults() | {"learning_rate": 1e-4 * (1 + int(tid[1:]))}
    return {"trial_id": tid, "round": 1, "status": status, "score": score, "params": params,
            "error": summary.pop("error", None), "gain": summary.pop("gain", None),
            "gain_stderr": summary.pop("gain_stderr", None),
            "summary": {"curve": summary.get("curve", {}), "evals": [],
                        "samples": summary.get("samples", {"status_share": {}, "failures": []})}}


def _ctx(k: int = 3, trials: list | None = None, feedback: list | None = None) -> PlanningContext:
    return PlanningContext(goal="raise dev accuracy", objective={"metric": "dev_accuracy_after", "target": None},
                           space=SearchSpace(), round=2 if trials else 1, k=k, trials=trials or [],
                           feedback=feedback or [])


@pytest.fixture(params=["offline", "gemini"])
def planner(request: pytest.FixtureRequest):
    if request.param == "offline":
        return OfflinePlanner(seed=0)
    server = request.getfixturevalue("gemini_server")
    return GeminiPlanner(gemini_config(server), fallback=OfflinePlanner())


@pytest.mark.parametrize("trials", [None, [_trial("t0000", 0.5), _trial("t0001", None, "failed")]])
def test_conformance_k_proposals_in_range_each_with_a_rationale(planner, trials):
    ctx = _ctx(k=3, trials=trials)
    result = planner.propose(ctx)
    assert len(result.proposals) == 3
    for p in result.proposals:
        assert p.rationale.strip()
        clean, notes = ctx.space.validate(p.params)
        assert clean == p.params and notes == []
    assert result.fallback is None and result.planner == planner.name
    assert planner.propose(_ctx(k=0)).proposals == []


# --- offline rules ---------------------------------------------------------------------------
def test_offline_first_round_starts_from_the_calibrated_defaults():
    result = OfflinePlanner().propose(_ctx(k=2))
    assert result.proposals[0].params == SearchSpace().defaults()
    assert result.proposals[1].params == {}  # TPE fills it at ask()


def _exploit(trials: list) -> tuple[dict, str]:
    result = OfflinePlanner().propose(_ctx(k=1, trials=trials))
    return result.proposals[0].params, result.proposals[0].rationale


def test_rule_many_syntax_errors_raises_the_executes_weight():
    params, why = _exploit([_trial("t0000", 0.5, samples={"status_share": {"syntax_error": 0.5, "ok": 0.5}})])
    assert params["reward_executes"] == pytest.approx(0.1) and "failed to execute" in why


def test_rule_reward_hacking_lowers_shaping_weights():
    best = _trial("t0000", 0.5, curve={"reward_delta": 0.3, "batch_accuracy_delta": 0.0})
    best["params"] |= {"reward_partial_credit": 0.3, "reward_format": 0.2}
    params, why = _exploit([best])
    assert params["reward_partial_credit"] == 0.1  # 0.15 -> nearest choice
    assert params["reward_format"] == pytest.approx(0.1) and "reward hacking" in why


def test_rule_exploding_kl_lowers_lr_and_raises_kl_beta():
    params, why = _exploit([_trial("t0000", 0.5, curve={"kl_max": 2.0})])
    assert params["learning_rate"] == pytest.approx(0.5e-4) and params["kl_beta"] == 0.001 and "KL" in why


def test_rule_nan_failure_and_oom_failure():
    trials = [_trial("t0000", 0.5), _trial("t0001", None, "failed", error={"kind": "nan_loss", "message": "x"}),
              _trial("t0002", None, "failed", error={"kind": "oom", "message": "y"})]
    params, why = _exploit(trials)
    assert params["learning_rate"] == pytest.approx(0.5e-4) and "NaN" in why
    assert params["group_size"] == 4 and params["prompts_per_step"] == 8 and "memory" in why  # halved from 8 and 16


def test_rule_no_signal_raises_temperature_and_no_rule_takes_a_local_step():
    params, why = _exploit([_trial("t0000", 0.5, curve={"reward_last": 0.01, "reward_delta": 0.0})])
    assert params["temperature"] == pytest.approx(0.85) and "no learning signal" in why
    params, why = _exploit([_trial("t0000", 0.5)])
    assert params["learning_rate"] == pytest.approx(1e-4 * 1.4) and "local step" in why


# --- gemini ------------------------------------------------------------------------------------
def test_gemini_prompt_carries_goal_space_leaderboard_and_failure_samples(gemini_server):
    failures = [{"question": "how many depts?", "sql": "SELEC COUNT(*)", "status": "syntax_error"}]
    trials = [_trial("t0000", 0.42, samples={"status_share": {"syntax_error": 0.4}, "failures": failures})]
    GeminiPlanner(gemini_config(gemini_server), OfflinePlanner()).propose(_ctx(k=2, trials=trials,
                                                                               feedback=["lr was clamped"]))
    request = gemini_server.requests[-1]
    assert request["path"].endswith("models/gemini-2.5-flash:generateContent")
    assert request["api_key"] == "test-key"
    config = request["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert "learning_rate" in config["responseJsonSchema"]["properties"]["proposals"]["items"]["properties"][
        "params"]["properties"]
    prompt = gemini_server.prompt()
    for text in ("raise dev accuracy", "Propose exactly 2", "reward_executes", "t0000", "0.42",
                 "SELEC COUNT(*)", "syntax_error", "lr was clamped"):
        assert text in prompt


def test_gemini_out_of_range_values_are_clamped_or_rejected_with_reasons(gemini_server):
    gemini_server.replies.append(("json", {"proposals": [
        {"params": {"learning_rate": 0.5, "loss_type": "ppo", "momentum": 0.9}, "rationale": "bold"},
        {"params": {"temperature": 0.8}, "rationale": "mild"}, {"params": {}, "rationale": "extra"}]}))
    result = GeminiPlanner(gemini_config(gemini_server), OfflinePlanner()).propose(_ctx(k=2))
    assert [p.params for p in result.proposals] == [{"learning_rate": 1e-3}, {"temperature": 0.8}]
    notes = " | ".join(result.notes)
    assert "clamped to 0.001" in notes and "'ppo' is not one of" in notes and "momentum" in notes
    assert "kept the first 2" in notes


def test_gemini_retries_api_errors_and_bad_json_then_succeeds(gemini_server):
    gemini_server.replies += [("status", 503), ("text", "{not json")]
    result = GeminiPlanner(gemini_config(gemini_server), OfflinePlanner()).propose(_ctx(k=1))
    assert len(gemini_server.requests) == 3 and result.planner == "gemini"
    assert result.proposals[0].rationale == "gemini pick 0"


def test_gemini_falls_back_to_offline_after_retries_and_says_why(gemini_server):
    gemini_server.replies += [("status", 500)] * 3
    result = GeminiPlanner(gemini_config(gemini_server), OfflinePlanner()).propose(_ctx(k=2))
    assert len(gemini_server.requests) == 3  # 1 + 2 retries
    assert result.planner == "offline (fallback)" and "3 attempts failed" in result.fallback
    assert len(result.proposals) == 2


def test_gemini_timeout_counts_as_a_failed_attempt(gemini_server):
    gemini_server.replies += [("sleep", 1.5)]
    config = gemini_config(gemini_server, retries=0, timeout_s=0.3)
    result = GeminiPlanner(config, OfflinePlanner()).propose(_ctx(k=1))
    assert result.planner == "offline (fallback)"


def test_gemini_fewer_proposals_than_slots_are_filled_by_optuna(gemini_server):
    gemini_server.replies.append(("json", {"proposals": [{"params": {"lora_rank": 16}, "rationale": "r16"}]}))
    result = GeminiPlanner(gemini_config(gemini_server), OfflinePlanner()).propose(_ctx(k=3))
    assert [p.params for p in result.proposals] == [{"lora_rank": 16}, {}, {}]


def test_gemini_parses_the_goal_and_overrides_still_win(gemini_server, monkeypatch):
    monkeypatch.setenv("OPENRL_AGENT_GEMINI_BASE_URL", gemini_server.url)
    gemini_server.replies.append(("json", {"understood": True, "trials": 5, "parallel": 2, "target": 0.65,
                                           "model": "builtin:tiny-gemma"}))
    plan = plan_goal("please get the warehouse model past sixty-five percent with five tries", {"parallel": 1})
    assert plan.planner["name"] == "gemini"
    assert (plan.constraints.trials, plan.constraints.parallel, plan.objective.target) == (5, 1, 0.65)
    assert plan.sources["trials"] == "gemini" and plan.sources["parallel"] == "override"
    gemini_server.replies.append(("json", {"understood": False, "reason": "this is about cooking"}))
    with pytest.raises(GoalError, match="this is about cooking"):
        plan_goal("bake a cake", {})


def test_offline_baseline_names_the_preset_it_runs():
    tiny = OfflinePlanner().propose(_ctx(k=1)).proposals[0]
    assert tiny.params["lora_rank"] == 0 and "the calibrated recipe (lr 2e-4" in tiny.rationale
    ctx = _ctx(k=1)
    ctx.space = SearchSpace.for_model("gemma-3-270m")
    pretrained = OfflinePlanner().propose(ctx).proposals[0]
    assert pretrained.params["lora_rank"] == 16 and pretrained.params["learning_rate"] == 5e-5
    assert "pretrained-model preset (30 supervised steps first, lr 5e-5" in pretrained.rationale
