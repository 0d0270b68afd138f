"""The time budget's arithmetic (agent/budget.py)."""

import json
import time

import pytest

from agent.budget import (
    MIN_TRAIN_S,
    SessionClock,
    Timekeeper,
    confirm_reserve_s,
    launch_seconds,
    overhead_s,
    trial_eta_s,
)
from agent.plan import Constraints


def _result(wall: float, train: float) -> dict:
    return {"metrics": {"wall_s": wall, "train_s": train}}


def test_the_clock_survives_a_restart(tmp_path):
    clock = SessionClock(tmp_path, save_every_s=0.0)
    time.sleep(0.05)
    before = clock.used()
    clock.save()
    saved = json.loads((tmp_path / "clock.json").read_text())["used_s"]
    assert saved >= round(before, 2)
    again = SessionClock(tmp_path)  # a new agent process after kill -9 starts from what was used
    assert again.base == saved and again.used() >= saved


def test_overhead_is_measured_once_trials_finish():
    assert overhead_s([], prior=30.0) == 30.0
    assert overhead_s([_result(250, 200), _result(230, 200)], prior=30.0) == 50.0  # the largest measured


def test_a_trial_gets_its_share_capped_by_the_time_left_and_none_when_it_cannot_finish():
    assert launch_seconds(remaining_s=1000, overhead=40, planned_s=180, trials_left=4, parallel=2) == 180
    assert launch_seconds(remaining_s=150, overhead=40, planned_s=180, trials_left=4, parallel=2) == 110
    assert launch_seconds(remaining_s=40 + MIN_TRAIN_S - 1, overhead=40, planned_s=180, trials_left=1,
                          parallel=2) is None
    assert launch_seconds(remaining_s=600, overhead=50, planned_s=None, trials_left=4, parallel=2) == 250


def test_the_confirmation_is_reserved_in_waves_of_the_slots():
    one_wave = confirm_reserve_s([_result(240, 200)], top_k=1, parallel=2)  # base + 1 trial: one wave
    two_waves = confirm_reserve_s([_result(240, 200)], top_k=2, parallel=2)  # base + 2 trials: two waves
    assert two_waves - one_wave == pytest.approx(20.0)  # one more evaluation job (half the 40 s overhead)
    assert confirm_reserve_s([], top_k=0, parallel=2) < one_wave


def test_timekeeper_without_a_budget_never_stops_a_launch(tmp_path):
    keeper = Timekeeper(tmp_path, Constraints(model="builtin:tiny-gemma", parallel=2, trials=4, trial_seconds=90))
    assert keeper.time_left([]) == float("inf") and keeper.launch_seconds([], finished=0) == 90
    tight = Timekeeper(tmp_path / "b", Constraints(model="builtin:tiny-gemma", parallel=2, trials=4,
                                                   trial_seconds=90, budget_minutes=0.5))
    assert tight.launch_seconds([], finished=0) is None  # 30 s cannot hold a trial and the confirmation


def test_the_trial_eta_counts_grpo_seconds_not_the_load_and_evaluations():
    # 10 steps of 2 s each, 40 s after the start (load + the first evaluation took the other 20 s)
    metrics = [{"step": i, "t_step": 2.0, "elapsed_s": 20.0 + 2 * i} for i in range(1, 11)]
    assert trial_eta_s(metrics, {"max_steps": 30}) == pytest.approx(40.0)  # 20 steps left at 2 s
    assert trial_eta_s(metrics, {"max_seconds": 50}) == pytest.approx(30.0)  # 50 s of GRPO, 20 used
    assert trial_eta_s(metrics, {"max_steps": 30, "max_seconds": 50}) == pytest.approx(30.0)  # the sooner
    assert trial_eta_s([], {"max_steps": 30}) is None and trial_eta_s(metrics, {}) is None


def test_a_confirmation_job_is_a_childs_whole_overhead():
    """A line of continuations: each child loads and evaluates once (its "before" is its parent's),
    so its whole overhead is what one test-split job costs; half of it (the old estimate, made for
    fresh trials that evaluate twice) left the session ending past its budget."""
    child = {**_result(240, 200), "child": True}  # 40 s outside GRPO: load + one evaluation + save
    fresh = _result(260, 200)  # 60 s: load + two evaluations
    one_job = confirm_reserve_s([child], top_k=1, parallel=2)
    assert confirm_reserve_s([child], top_k=2, parallel=2) - one_job == pytest.approx(40.0)
    assert confirm_reserve_s([child, fresh], top_k=2, parallel=2) - confirm_reserve_s([child, fresh], top_k=1,
                                                                                   parallel=2) == pytest.approx(35.0)
    assert confirm_reserve_s([fresh], top_k=2, parallel=2) - confirm_reserve_s([fresh], top_k=1,
                                                                            parallel=2) == pytest.approx(30.0)


def test_a_trials_overhead_is_measured_from_submit_to_collection(tmp_path, monkeypatch):
    """The time budget leaves each launch room for what the session sees a trial cost (process
    start, imports, polling), not only what the trial counts itself: a launch sized on the trial's
    own count ran into the deadline and was cancelled a few seconds before its end."""
    import json

    from agent.api import create_session, plan_goal, run_session
    from agent.loop import _observed
    from agent.session import open_study
    from tests.agent.support import scripted_launcher

    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.05, "steps": 2}))
    session_dir = create_session(plan_goal("raise dev accuracy, 2 trials, 1 at a time", {"planner": "offline"}),
                                 tmp_path / "runs")
    run_session(session_dir, launcher=scripted_launcher(session_dir, 1), poll_s=0.05)
    trials = open_study(session_dir).trials
    assert len(trials) == 2
    for t in trials:
        own, seen = t.user_attrs["metrics"]["wall_s"], t.user_attrs["wall_observed_s"]
        assert t.user_attrs["launched_at_s"] >= 0 and seen > own  # a process start the trial cannot count
        assert _observed(t.user_attrs)["wall_s"] == seen
