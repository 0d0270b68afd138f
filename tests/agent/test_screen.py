"""Screens: a challenger races the incumbent at equal steps on the dev subset (agent/screen.py), is
stopped once behind by more than one paired SE, and replaces the incumbent only at the winner rule.
Unit checks on real eval files, the offline planner's one-line policy, and a real session (real
LangGraph loop, Optuna journal, LocalLauncher running scripted trial processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import screen as sc
from agent.api import create_session, plan_goal, run_session
from agent.planners.base import Clock, PlannerResult, PlanningContext, Proposal
from agent.planners.offline import OfflinePlanner
from rl_core.trialdir import EVAL_FILE, launch_spec
from tests.agent.support import scripted_launcher
from tools.leaderboard import leaderboard
from tools.search_space import SearchSpace


def _evals(trial_dir: Path, right_by_step: dict[int, int], n: int = 100) -> Path:
    trial_dir.mkdir(parents=True, exist_ok=True)
    with open(trial_dir / EVAL_FILE, "w") as f:
        for step, right in right_by_step.items():
            f.write(json.dumps({"step": step, "accuracy": right / n,
                                "outcomes": {f"q{i}": i < right for i in range(n)}}) + "\n")
    return trial_dir


def test_a_challenger_behind_by_more_than_one_se_is_stopped(tmp_path: Path):
    ref = _evals(tmp_path / "ref", {0: 40, 10: 50, 20: 55})
    behind = _evals(tmp_path / "behind", {0: 40, 10: 44})  # 6 questions lost: -6 ± 2.4 points
    found = sc.screen(behind, ref, "ref", finished=False)
    assert found is not None and found.verdict == sc.STOPPED and found.step == 10
    assert found.diff == pytest.approx(-0.06) and found.se < 0.06


def test_a_close_challenger_races_on_and_a_clear_winner_replaces(tmp_path: Path):
    ref = _evals(tmp_path / "ref", {10: 50, 20: 55})
    close = _evals(tmp_path / "close", {10: 49, 20: 56})
    assert sc.screen(close, ref, "ref", finished=False).verdict == sc.WAITING
    assert sc.screen(close, ref, "ref", finished=True).verdict == sc.KEPT  # +1 point: the noise
    clear = _evals(tmp_path / "clear", {10: 52, 20: 62})  # +7 points, every changed answer a gain
    found = sc.screen(clear, ref, "ref", finished=True)
    assert found.verdict == sc.REPLACES and found.step == 20 and found.p_holm < 0.05
    # Holm over every challenger of the checkpoint: with many rivals tried, the same lead is not enough
    rival = sc.race(close, ref)[1]
    assert sc.screen(clear, ref, "ref", finished=True, rivals=[rival] * 10).verdict == sc.KEPT


def test_the_race_is_at_equal_steps_only(tmp_path: Path):
    ref = _evals(tmp_path / "ref", {10: 50})
    ahead_in_steps = _evals(tmp_path / "c", {20: 80})  # no common step: nothing to compare yet
    assert sc.screen(ahead_in_steps, ref, "ref", finished=False) is None


# --- the offline planner with one trial at a time --------------------------------------------------
def _row(tid: str, score: float, **kw) -> dict:
    params = SearchSpace().defaults()
    return {"trial_id": tid, "round": 1, "status": "succeeded", "score": score, "params": dict(params),
            "error": None, "gain": None, "gain_stderr": None, "steps": 40, "action": "fresh", "parent": None,
            "summary": {"curve": {}, "evals": [], "samples": {"status_share": {}, "failures": []}}, **kw}


def _ctx(trials: list[dict], explore_s: float | None = 300.0) -> PlanningContext:
    return PlanningContext(goal="g", objective={"metric": "dev_accuracy_after", "target": None}, space=SearchSpace(),
                           round=3, k=1, trials=trials, clock=Clock(time_left_s=600.0, launch_s=200.0, overhead_s=15.0,
                                                                    step_s=3.0, slots=1, explore_s=explore_s))


def test_one_slot_screens_the_line_then_sends_a_supervised_stage_challenger_from_its_checkpoint():
    line = _row("t0001", 0.58, action="continue", parent="t0000", gain=0.04, gain_stderr=0.015)
    (cont,) = OfflinePlanner().propose(_ctx([_row("t0000", 0.50), line])).proposals
    assert (cont.action, cont.parent, cont.screened) == ("continue", "t0001", True)
    assert "supervised steps first" in cont.rationale
    # the screened continuation finished: a challenger forks from t0001 with a supervised stage, then
    # GRPO for equal steps cut to the exploration time: (300 - 15 - 100 x 0.3) / 3 = 85 -> the head's 40
    ref = _row("t0002", 0.60, action="continue", parent="t0001", gain=0.02, gain_stderr=0.015, screened=True)
    (ch,) = OfflinePlanner().propose(_ctx([_row("t0000", 0.50), line, ref])).proposals
    assert (ch.action, ch.parent, ch.screened, ch.max_steps, ch.sft_steps) == ("branch", "t0001", True, 40, 100)
    assert "racing it at equal steps" in ch.rationale and "supervised stage" in ch.rationale
    # less exploration time: a shorter stage (a third of it) and fewer steps, in whole screens of 10:
    # 150 s -> 50 s of supervised steps = 166 -> 100 (the prior), (150 - 15 - 30) / 3 = 35 -> 30 steps
    (short,) = OfflinePlanner().propose(_ctx([_row("t0000", 0.50), line, ref], explore_s=150.0)).proposals
    assert (short.sft_steps, short.max_steps) == (100, 30)
    # none left: the line is simply continued, unscreened
    (plain,) = OfflinePlanner().propose(_ctx([_row("t0000", 0.50), line, ref], explore_s=10.0)).proposals
    assert (plain.action, plain.parent, plain.screened) == ("continue", "t0002", False)


def test_one_slot_no_visible_move_left_means_plain_continuation():
    # the supervised stage lost its race, no rule fires, and PBT's explore step is below the screen's
    # resolution: the line keeps all the compute
    line = _row("t0001", 0.51, action="continue", parent="t0000", gain=0.01, gain_stderr=0.015)
    ref = _row("t0002", 0.52, action="continue", parent="t0001", screened=True)
    lost = _row("t0003", 0.50, action="branch", parent="t0001", screened=True, sft_steps=100,
                screen={"verdict": sc.KEPT, "diff": -0.01})
    (nxt,) = OfflinePlanner().propose(_ctx([_row("t0000", 0.50), line, ref, lost])).proposals
    assert (nxt.action, nxt.parent, nxt.screened, nxt.sft_steps) == ("continue", "t0002", False, None)


def test_one_slot_line_follows_a_challenger_only_when_it_replaced_the_incumbent():
    flat = _row("t0001", 0.51, action="continue", parent="t0000", gain=0.01, gain_stderr=0.015)
    ref = _row("t0002", 0.52, action="continue", parent="t0001", screened=True, gain=0.01, gain_stderr=0.015)
    lucky = _row("t0003", 0.56, action="branch", parent="t0001", screened=True,
                 screen={"verdict": sc.KEPT, "diff": 0.02})  # higher dev, but its race was within the noise
    (nxt,) = OfflinePlanner().propose(_ctx([_row("t0000", 0.50), flat, ref, lucky])).proposals
    assert (nxt.action, nxt.parent) == ("continue", "t0002")
    lucky["screen"] = {"verdict": sc.REPLACES, "diff": 0.09}
    (nxt,) = OfflinePlanner().propose(_ctx([_row("t0000", 0.50), flat, ref, lucky])).proposals
    assert (nxt.action, nxt.parent) == ("continue", "t0003")


# --- a real session --------------------------------------------------------------------------------
class ChallengePlanner:
    """Round 1 the baseline; round 2 its screened continuation; round 3 a challenger from the
    baseline (a learning rate the scripted trial makes worse), then nothing."""

    name = "challenge"

    def __init__(self) -> None:
        self.calls = 0

    def propose(self, ctx: PlanningContext) -> PlannerResult:
        self.calls += 1
        base = SearchSpace().defaults()
        if self.calls == 1:
            return PlannerResult([Proposal(base, "baseline")], self.name)
        if self.calls == 2:
            return PlannerResult([Proposal(base, "line", "continue", "t0000", screened=True)], self.name)
        if self.calls == 3:
            return PlannerResult([Proposal({**base, "learning_rate": 5e-4}, "challenger", "branch", "t0000",
                                           screened=True, max_steps=8)], self.name)
        return PlannerResult([], self.name)


def test_a_session_stops_a_losing_challenger_at_its_next_screen(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.25, "steps": 8, "outcomes": 100,
                                                     "offset_if": ["learning_rate", 5e-4, -0.4]}))
    session_dir = create_session(plan_goal("raise dev accuracy, 3 trials, 1 at a time", {"planner": "offline"}),
                                 tmp_path / "runs")
    events: list[dict] = []
    run_session(session_dir, events.append, launcher=scripted_launcher(session_dir, 1), planner=ChallengePlanner(),
                poll_s=0.05)
    rows = {r["trial_id"]: r for r in leaderboard(session_dir)}
    challenger = rows["t0002"]
    assert (challenger["action"], challenger["parent"], challenger["status"]) == ("branch", "t0000", "pruned")
    assert challenger["screen"]["verdict"] == sc.STOPPED and challenger["screen"]["reference"] == "t0001"
    assert challenger["screen"]["step"] < 8 and challenger["screen"]["diff"] < -challenger["screen"]["se"]
    # stopped at the screen: it did not run its 8 steps
    steps = [json.loads(line)["step"] for line in (session_dir / "trials" / "t0002" / "metrics.jsonl").read_text()
             .splitlines()]
    assert max(steps) < 8
    assert any(e["type"] == "screen" and e["verdict"] == sc.STOPPED for e in events)
    # the launch spec of the challenger: its own length and subset evaluations every screen_steps
    spec = launch_spec(session_dir / "trials" / "t0002")
    assert spec["budget"]["max_steps"] == 8 and spec["eval"]["every_steps"] == 10
    # and its reference, the screened continuation, evaluated the same subset at the same steps
    assert launch_spec(session_dir / "trials" / "t0001")["eval"]["every_steps"] == 10
    assert rows["t0001"]["screened"] and rows["t0002"]["screened"]
    assert spec["init_from"]["optimizer"] is True  # it resumes the checkpoint's whole trainer state
    # the report's trial tree shows the stopped challenger under its checkpoint, with its race
    from agent.report import build_report, render_markdown
    from agent.report.format import tree_rows

    facts = build_report(session_dir, importances=False)
    node = next(n for n in facts["tree"] if n["trial_id"] == "t0002")
    assert node["parent"] == "t0000" and node["status"] == "pruned"
    (row,) = [r for r in tree_rows(facts["tree"]) if "t0002" in r[0]]
    assert row[-1].startswith("vs t0001 at step ") and row[-1].endswith("stopped")
    assert "stopped" in render_markdown(facts)


def test_with_spare_slots_one_branch_tries_the_supervised_stage_beside_the_continue():
    ctx = _ctx([_row("t0000", 0.50)])
    ctx.k, ctx.clock = 3, Clock(time_left_s=600.0, launch_s=200.0, overhead_s=15.0, step_s=3.0, slots=3)
    cont, explore, staged = OfflinePlanner().propose(ctx).proposals
    assert (cont.action, staged.action, explore.action) == ("continue", "branch", "branch")
    assert staged.sft_steps == 100 and explore.sft_steps is None and "explore" in explore.rationale
    assert cont.screened and staged.screened and explore.screened  # both branches race the continue


def test_a_challenger_is_cut_to_what_a_launch_still_gets():
    line = _row("t0001", 0.58, action="continue", parent="t0000", gain=0.04, gain_stderr=0.015)
    ref = _row("t0002", 0.60, action="continue", parent="t0001", screened=True)
    ctx = _ctx([_row("t0000", 0.50), line, ref])
    ctx.clock = Clock(time_left_s=200.0, launch_s=90.0, overhead_s=15.0, step_s=3.0, slots=1, explore_s=300.0)
    (ch,) = OfflinePlanner().propose(ctx).proposals
    assert (ch.sft_steps, ch.max_steps) == (100, 30)  # 90 s of GRPO at 3 s/step
    ctx.clock = Clock(time_left_s=120.0, launch_s=90.0, overhead_s=15.0, step_s=3.0, slots=1, explore_s=300.0)
    (ch,) = OfflinePlanner().propose(ctx).proposals
    assert (ch.sft_steps, ch.max_steps) == (100, 20)  # (120 - 15 - 100 x 0.3) / 3 = 25 -> 20 steps
    # once its reference has run, one screen is enough: one paired comparison at equal steps
    ctx.clock = Clock(time_left_s=90.0, launch_s=50.0, overhead_s=15.0, step_s=3.0, slots=1, explore_s=300.0)
    (ch,) = OfflinePlanner().propose(ctx).proposals
    assert (ch.action, ch.max_steps) == ("branch", 10)
    ctx.clock = Clock(time_left_s=70.0, launch_s=50.0, overhead_s=15.0, step_s=3.0, slots=1, explore_s=300.0)
    assert OfflinePlanner().propose(ctx).proposals[0].action == "continue"  # not even one screen fits


def test_a_continuation_is_screened_only_if_its_race_still_fits_after_it():
    line = _row("t0001", 0.58, action="continue", parent="t0000", gain=0.04, gain_stderr=0.015)
    ctx = _ctx([_row("t0000", 0.50), line])
    ctx.clock = Clock(time_left_s=250.0, launch_s=200.0, overhead_s=15.0, step_s=3.0, slots=1, explore_s=300.0)
    (cont,) = OfflinePlanner().propose(ctx).proposals
    assert (cont.action, cont.screened) == ("continue", False)  # 35 s would be left for the challenger
