"""One conformance suite for every planner, then each planner's own behaviour. The LLM planners are
the real clients (google-genai; openai) talking to local servers that speak the generateContent
REST API and the Chat Completions API (tests/agent/llm_servers.py)."""

from __future__ import annotations

import time

import pytest
from rich.console import Console

from agent.cli.live import plan_renderable
from agent.goal import GoalError, plan_goal
from agent.planners.base import Clock, PlanningContext
from agent.planners.gemini import GeminiPlanner
from agent.planners.offline import OfflinePlanner
from agent.planners.openai_compat import OpenAIPlanner
from tests.agent.conftest import gemini_config, openai_config
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


LLMS = {"gemini": (GeminiPlanner, gemini_config), "openai": (OpenAIPlanner, openai_config)}


class LLM:
    """One LLM planner under test: its scripted server and a way to build the planner against it."""

    def __init__(self, name: str, server) -> None:
        self.name, self.server = name, server
        self.lines: list[str] = []

    def config(self, **extra) -> dict:
        return LLMS[self.name][1](self.server, **extra)

    def planner(self, **extra):
        return LLMS[self.name][0](self.config(**extra), OfflinePlanner(), progress=self.lines.append)


@pytest.fixture(params=sorted(LLMS))
def llm(request: pytest.FixtureRequest) -> LLM:
    return LLM(request.param, request.getfixturevalue(f"{request.param}_server"))


@pytest.fixture(params=["offline", *sorted(LLMS)])
def planner(request: pytest.FixtureRequest):
    if request.param == "offline":
        return OfflinePlanner(seed=0)
    return LLM(request.param, request.getfixturevalue(f"{request.param}_server")).planner()


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


def _exploit(trials: list, branching: bool = True) -> tuple[dict, str]:
    """The offline planner's rules at the branch point: the second proposal (the first continues the best)."""
    ctx = _ctx(k=2 if branching else 1, trials=trials)
    ctx.branching = branching
    result = OfflinePlanner().propose(ctx)
    p = result.proposals[-1 if branching else 0]
    if branching:
        assert p.action == "branch" and p.parent == "t0000"
    return p.params, p.rationale


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
    params, why = _exploit([_trial("t0000", 0.5)])  # no rule fires: PBT's explore step
    assert params["learning_rate"] in (pytest.approx(1e-4 * 1.25), pytest.approx(1e-4 * 0.8)) and "explore" in why
    params, why = _exploit([_trial("t0000", 0.5)], branching=False)  # without branching: a fresh local step
    assert params["learning_rate"] == pytest.approx(1e-4 * 1.4) and "local step" in why


def test_offline_tree_continues_the_best_then_branches_and_never_repeats():
    trials = [_trial("t0000", 0.5), _trial("t0001", 0.6)]
    first = OfflinePlanner().propose(_ctx(k=2, trials=trials)).proposals
    assert (first[0].action, first[0].parent) == ("continue", "t0001")
    assert first[0].params == trials[1]["params"]  # unchanged
    assert (first[1].action, first[1].parent) == ("branch", "t0001") and first[1].params != trials[1]["params"]
    # A continuation of t0001 exists (running): no second one; branches differ from the running one.
    ctx = _ctx(k=2, trials=trials)
    ctx.running = [{"trial_id": "t0002", "params": first[0].params, "action": "continue", "parent": "t0001"},
                   {"trial_id": "t0003", "params": first[1].params, "action": "branch", "parent": "t0001"}]
    again = OfflinePlanner().propose(ctx).proposals
    assert [p.action for p in again] == ["branch", "branch"]
    assert all(p.parent == "t0000" for p in again)  # t0001 has two running children: the next best
    assert again[0].params != again[1].params


ONE_SLOT = Clock(time_left_s=300.0, launch_s=120.0, overhead_s=15.0, step_s=3.4, slots=1)


def _line(child_gain: float, child_se: float) -> list[dict]:
    """t0000 (fresh, dev 0.50) continued by t0001 (dev 0.50 + child_gain)."""
    child = _trial("t0001", 0.50 + child_gain)
    child.update(action="continue", parent="t0000", round=2, gain=child_gain, gain_stderr=child_se)
    return [_trial("t0000", 0.50), child]


def test_with_one_slot_the_head_of_the_leading_line_is_continued_within_the_noise():
    ctx = _ctx(k=1, trials=_line(-0.01, 0.015))  # t0001 is 1 point behind its start: noise
    ctx.clock = ONE_SLOT
    (only,) = OfflinePlanner().propose(ctx).proposals
    assert (only.action, only.parent) == ("continue", "t0001") and "the line that leads keeps the compute" in only.rationale
    ctx.running = [{"trial_id": "t0002", "params": only.params, "action": "continue", "parent": "t0001"}]
    ctx.trials = _line(-0.01, 0.015)
    assert OfflinePlanner().propose(ctx).proposals[0].action == "branch"  # the head is already being continued


def test_with_one_slot_a_clear_loss_ends_the_line_and_the_leader_branches():
    ctx = _ctx(k=1, trials=_line(-0.06, 0.015))  # 4 SE behind its own start: a real loss
    ctx.clock = ONE_SLOT
    (only,) = OfflinePlanner().propose(ctx).proposals
    assert (only.action, only.parent) == ("branch", "t0000")


def test_with_spare_slots_the_tree_explores_as_before():
    ctx = _ctx(k=2, trials=_line(-0.01, 0.015))
    ctx.clock = Clock(time_left_s=300.0, launch_s=120.0, overhead_s=15.0, step_s=3.4, slots=2)
    assert [p.action for p in OfflinePlanner().propose(ctx).proposals] == ["branch", "branch"]


def test_the_llm_prompt_carries_the_clock(llm):
    ctx = _ctx(k=1, trials=_line(-0.01, 0.015))
    ctx.clock = ONE_SLOT
    llm.planner().propose(ctx)
    prompt = llm.server.prompt()
    for text in ("1 trial(s) run at once", "300 s of the budget left", "120 s of GRPO (~35 steps at 3.4 s/step)",
                 "~15 s more for loading and evaluation"):
        assert text in prompt


# --- the LLM planners (Gemini, OpenAI-compatible): same behaviour, two transports -------------
def test_llm_prompt_carries_goal_space_leaderboard_and_failure_samples(llm):
    failures = [{"question": "how many depts?", "sql": "SELEC COUNT(*)", "status": "syntax_error"}]
    trials = [_trial("t0000", 0.42, samples={"status_share": {"syntax_error": 0.4}, "failures": failures})]
    llm.planner().propose(_ctx(k=2, trials=trials, feedback=["lr was clamped"]))
    request = llm.server.requests[-1]
    if llm.name == "gemini":
        assert request["path"].endswith("models/gemini-2.5-flash:generateContent")
        assert request["headers"]["x-goog-api-key"] == "test-key"
        config = request["body"]["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        schema = config["responseJsonSchema"]
    else:
        assert request["path"] == "/v1/chat/completions" and request["body"]["model"] == "local-model"
        assert request["headers"]["authorization"] == "Bearer test-openai-key"
        assert request["body"]["response_format"]["type"] == "json_schema"
        schema = request["body"]["response_format"]["json_schema"]["schema"]
    assert "learning_rate" in schema["properties"]["proposals"]["items"]["properties"]["params"]["properties"]
    prompt = llm.server.prompt()
    for text in ("raise dev accuracy", "Propose exactly 2", "reward_executes", "t0000", "0.42",
                 "SELEC COUNT(*)", "syntax_error", "lr was clamped"):
        assert text in prompt


def test_llm_schema_is_derived_from_the_search_space_and_carries_action_and_parent(llm):
    ctx = _ctx(k=1)
    ctx.space = SearchSpace.for_model("gemma-3-270m")
    ctx.space.params = {k: v for k, v in ctx.space.params.items() if k in ("learning_rate", "lora_rank")}
    llm.planner().propose(ctx)
    body = llm.server.requests[-1]["body"]
    schema = (body["generationConfig"]["responseJsonSchema"] if llm.name == "gemini"
              else body["response_format"]["json_schema"]["schema"])
    item = schema["properties"]["proposals"]["items"]["properties"]
    assert sorted(item["params"]["properties"]) == ["learning_rate", "lora_rank"]
    assert item["params"]["properties"]["lora_rank"]["description"] == "one of [8, 16, 32]"
    assert item["action"]["enum"] == ["fresh", "continue", "branch"] and item["parent"]["type"] == "string"


def test_llm_prompt_shows_the_best_trials_whatever_their_order_and_the_running_ones(llm):
    trials = [_trial(f"t{i:04d}", round(0.30 + 0.01 * i, 2)) for i in range(15)]
    trials[3]["parent"] = "t0001"
    trials.append(_trial("t0015", None, "failed", error={"kind": "oom", "message": "out of memory"}))
    best_first = sorted(trials, key=lambda t: -(t["score"] or 0))
    for order in (best_first, trials):
        ctx = _ctx(k=1, trials=order)
        ctx.active = [{"learning_rate": 0.000777, "lora_rank": 16}]
        llm.planner().propose(ctx)
        prompt = llm.server.prompt()
        for tid in ("t0014", "t0013", "t0012", "t0005", "t0015"):  # the top 10, and the latest failure
            assert f'"trial_id": "{tid}"' in prompt
        assert '"trial_id": "t0004"' not in prompt and "5 older failed or lower-scoring trials not shown" in prompt
        assert prompt.index('"trial_id": "t0014"') < prompt.index('"trial_id": "t0013"')
        assert "Running now (1; do not propose these values again)" in prompt and "0.000777" in prompt
    ctx = _ctx(k=1, trials=trials[:5])
    llm.planner().propose(ctx)
    assert '"trial_id": "t0003", "round": 1, "status": "succeeded", "score": 0.33' in llm.server.prompt()
    assert '"parent": "t0001"' in llm.server.prompt()


def test_llm_branch_and_continue_need_a_succeeded_parent_else_fresh_with_a_note(llm):
    llm.server.replies.append(("json", {"proposals": [
        {"params": {"temperature": 0.9}, "rationale": "explore from the best", "action": "branch", "parent": "t0000"},
        {"params": {}, "rationale": "more steps", "action": "continue", "parent": "t0009"},
        {"params": {}, "rationale": "from a failure", "action": "branch", "parent": "t0001"},
        {"params": {}, "rationale": "odd", "action": "mutate", "parent": "t0000"}]}))
    trials = [_trial("t0000", 0.5), _trial("t0001", None, "failed")]
    result = llm.planner().propose(_ctx(k=4, trials=trials))
    assert [(p.action, p.parent) for p in result.proposals] == [("branch", "t0000"), ("fresh", None),
                                                                 ("fresh", None), ("fresh", None)]
    notes = " | ".join(result.notes)
    assert "proposal 2: continue needs a succeeded trial as parent, not 't0009' (succeeded: t0000)" in notes
    assert "proposal 3: branch needs a succeeded trial as parent, not 't0001'" in notes
    assert "proposal 4: action 'mutate' is not one of" in notes


def test_llm_out_of_range_values_are_clamped_or_rejected_with_reasons(llm):
    llm.server.replies.append(("json", {"proposals": [
        {"params": {"learning_rate": 0.5, "loss_type": "ppo", "momentum": 0.9}, "rationale": "bold"},
        {"params": {"temperature": 0.8}, "rationale": "mild"}, {"params": {}, "rationale": "extra"}]}))
    result = llm.planner().propose(_ctx(k=2))
    assert [p.params for p in result.proposals] == [{"learning_rate": 1e-3}, {"temperature": 0.8}]
    notes = " | ".join(result.notes)
    assert "clamped to 0.001" in notes and "'ppo' is not one of" in notes and "momentum" in notes
    assert "kept the first 2" in notes


def test_llm_retries_api_errors_and_malformed_answers_then_succeeds(llm):
    llm.server.replies += [("status", 503), ("text", "{not json")]
    result = llm.planner().propose(_ctx(k=1))
    assert len(llm.server.requests) == 3 and result.planner == llm.name
    assert result.proposals[0].rationale == f"{llm.name} pick 0"
    assert [line.split(" (")[0] for line in llm.lines] == [f"asking {llm.name} for round 1's 1 proposal"] * 3
    assert "attempt 3 of 3" in llm.lines[-1] and "of at most 60s" in llm.lines[-1]


def test_llm_falls_back_to_offline_after_retries_and_says_why(llm):
    llm.server.replies += [("status", 500)] * 3
    result = llm.planner().propose(_ctx(k=2))
    assert len(llm.server.requests) == 3  # 1 + 2 retries
    assert result.planner == "offline (fallback)" and f"{llm.name} failed: 3 attempts failed" in result.fallback
    assert len(result.proposals) == 2


def test_llm_honours_retry_after_of_a_429(llm):
    llm.server.replies.append(("status", 429, 0.6))
    result = llm.planner(backoff_s=0.01).propose(_ctx(k=1))
    assert result.planner == llm.name and len(llm.server.requests) == 2
    assert llm.server.requests[1]["t"] - llm.server.requests[0]["t"] >= 0.55


def test_llm_a_429_asking_to_wait_past_the_limit_falls_back_at_once(llm):
    llm.server.replies.append(("status", 429, 120))
    start = time.monotonic()
    result = llm.planner(wait_s=5).propose(_ctx(k=1))
    assert time.monotonic() - start < 3 and len(llm.server.requests) == 1
    assert result.planner == "offline (fallback)" and "would pass the 5s limit" in result.fallback


def test_llm_a_server_that_never_answers_costs_at_most_the_wait(llm):
    llm.server.replies += [("hang", None)] * 4
    start = time.monotonic()
    result = llm.planner(wait_s=1.5, timeout_s=30, retries=3).propose(_ctx(k=1))
    elapsed = time.monotonic() - start
    assert 1.3 < elapsed < 3.5, elapsed
    assert result.planner == "offline (fallback)" and "wait limit 1.5s" in result.fallback
    assert llm.lines and "of at most 1.5s" in llm.lines[0]


def test_llm_fewer_proposals_than_slots_are_filled_by_optuna(llm):
    llm.server.replies.append(("json", {"proposals": [{"params": {"lora_rank": 16}, "rationale": "r16"}]}))
    result = llm.planner().propose(_ctx(k=3))
    assert [p.params for p in result.proposals] == [{"lora_rank": 16}, {}, {}]


# --- the LLM reads the goal ----------------------------------------------------------------------
def _point_at(llm: LLM, monkeypatch: pytest.MonkeyPatch) -> dict:
    if llm.name == "gemini":
        monkeypatch.setenv("OPENRL_AGENT_GEMINI_BASE_URL", llm.server.url)
    else:
        monkeypatch.setenv("OPENAI_BASE_URL", llm.server.url + "/v1")
    return {"planner": llm.name}


def test_llm_parses_the_goal_and_overrides_still_win(llm, monkeypatch):
    flags = _point_at(llm, monkeypatch)
    llm.server.replies.append(("json", {"understood": True, "trials": 5, "parallel": 2, "target": 0.65,
                                        "model": "builtin:tiny-gemma"}))
    plan = plan_goal("please get the warehouse model past sixty-five percent with five tries", {**flags, "parallel": 1})
    assert plan.planner["name"] == llm.name
    assert (plan.constraints.trials, plan.constraints.parallel, plan.objective.target) == (5, 1, 0.65)
    assert plan.sources["trials"] == llm.name and plan.sources["parallel"] == "override"
    llm.server.replies.append(("json", {"understood": False, "reason": "this is about cooking"}))
    with pytest.raises(GoalError, match="this is about cooking"):
        plan_goal("bake a cake", flags)


def test_numbers_the_user_wrote_win_over_the_llms_reading(llm, monkeypatch):
    flags = _point_at(llm, monkeypatch)
    llm.server.replies.append(("json", {"understood": True, "trials": 30, "parallel": 2}))
    plan = plan_goal("raise dev accuracy, 3 trials", flags)
    assert plan.constraints.trials == 3 and plan.sources["trials"] == "goal"
    assert plan.constraints.parallel == 2 and plan.sources["parallel"] == llm.name
    with pytest.raises(GoalError, match='the goal says "-2 trials"'):
        plan_goal("raise dev accuracy, -2 trials", flags)


def test_the_goal_parsing_fallback_is_shown_in_the_plan(llm, monkeypatch):
    flags = _point_at(llm, monkeypatch)
    llm.server.replies += [("status", 500)] * 4
    lines: list[str] = []
    plan = plan_goal("raise dev accuracy, 3 trials", {**flags, "planner_wait_s": 2}, progress=lines.append)
    assert plan.planner["wait_s"] == 2 and plan.constraints.trials == 3
    assert any(f"{llm.name} could not read the goal" in n and "the regex rules read it instead" in n
               for n in plan.notes)
    console = Console(width=100, record=True)
    console.print(plan_renderable(plan))
    assert f"{llm.name} could not read the goal" in console.export_text().replace("\n", " ")
    assert lines[0].startswith(f"asking {llm.name} for a reading of the goal (attempt 1 of 4")


def test_offline_baseline_names_the_preset_it_runs():
    tiny = OfflinePlanner().propose(_ctx(k=1)).proposals[0]
    assert tiny.params["lora_rank"] == 0 and "the calibrated recipe (lr 2e-4" in tiny.rationale
    ctx = _ctx(k=1)
    ctx.space = SearchSpace.for_model("gemma-3-270m")
    pretrained = OfflinePlanner().propose(ctx).proposals[0]
    assert pretrained.params["lora_rank"] == 16 and pretrained.params["learning_rate"] == 3e-5
    assert pretrained.params["temperature"] == 0.9 and pretrained.params["reward_executes"] == 0.1
    assert "pretrained-model preset (40 supervised steps first, lr 3e-5, 2 prompts x 8, T=0.9" in pretrained.rationale


def test_llm_may_put_a_supervised_stage_on_a_branch_which_then_races_the_continue(llm):
    llm.server.replies.append(("json", {"proposals": [
        {"params": {}, "rationale": "keep the line", "action": "continue", "parent": "t0000"},
        {"params": {}, "rationale": "gold SQL first", "action": "branch", "parent": "t0000", "supervised_steps": 900},
        {"params": {}, "rationale": "no", "action": "continue", "parent": "t0000", "supervised_steps": 50}]}))
    result = llm.planner().propose(_ctx(k=3, trials=[_trial("t0000", 0.5)]))
    cont, staged, again = result.proposals
    assert (staged.action, staged.sft_steps, staged.screened, cont.screened) == ("branch", 400, True, True)
    assert again.sft_steps is None
    notes = " | ".join(result.notes)
    assert "supervised_steps 900 clamped to 400" in notes and "a continue runs no supervised stage" in notes
    assert "supervised_steps" in llm.server.prompt()
