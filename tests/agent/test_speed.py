"""Compute-aware parallelism (agent/speed.py): the slot count follows measured speeds. The probes are
real subprocesses through the real LocalLauncher; the scripted trial stands in for the trainer and
reports the step time it is told to take alone and side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.goal import plan_goal
from agent.speed import SpeedError, cache_file, choose_parallel
from cluster.local import LocalLauncher
from tests.agent.support import scripted_command


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENRL_AGENT_CACHE", str(tmp_path / "cache"))


def _launchers(calls: list[int]):
    def make(slots: int, runs: Path) -> LocalLauncher:
        calls.append(slots)
        return LocalLauncher(runs_dir=runs, slots=slots, command=scripted_command)
    return make


def _plan(goal: str = "raise dev accuracy of micro-gemma, 4 trials, 2 at a time in 10 minutes"):
    return plan_goal(goal, {"planner": "offline"})


def test_one_line_when_side_by_side_drops_below_the_floor(monkeypatch):
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.05, "steps": 4, "crowded_step_s": {"2": 0.1}}))
    plan, calls = _plan(), []
    shared = plan.constraints.trial_seconds  # 10 min x 2 slots / 4 trials
    note = choose_parallel(plan, _launchers(calls), cores=2)
    assert plan.constraints.parallel == 1 and calls == [1, 2] and plan.sources["parallel"] == "measured"
    assert note in plan.notes and "each train at 50% of one's speed" in note and "1 at a time" in note
    assert shared == 300 and plan.constraints.trial_seconds == 150  # the fair share follows the slots


def test_k_lines_when_each_keeps_its_solo_speed(monkeypatch):
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.05, "steps": 4, "crowded_step_s": {"2": 0.052}}))
    plan = _plan()
    assert choose_parallel(plan, _launchers([]), cores=2) is None and plan.constraints.parallel == 2


def test_the_largest_k_that_keeps_the_floor(monkeypatch):
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.05, "steps": 4,
                                                     "crowded_step_s": {"3": 0.1, "2": 0.053}}))
    plan = _plan("raise dev accuracy of micro-gemma, 6 trials, 3 at a time")
    note = choose_parallel(plan, _launchers([]), cores=4)
    assert plan.constraints.parallel == 2 and "3 trials side by side" in note and "2 at a time" in note


def test_the_figure_is_measured_once_per_machine(monkeypatch):
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.05, "steps": 4, "crowded_step_s": {"2": 0.1}}))
    calls: list[int] = []
    choose_parallel(_plan(), _launchers(calls), cores=2)
    assert cache_file(_plan(), 2).is_file() and len(calls) == 2
    again = _plan()
    choose_parallel(again, _launchers(calls), cores=2)
    assert len(calls) == 2 and again.constraints.parallel == 1  # read from the cache, nothing launched


def test_a_failing_probe_says_which(monkeypatch):
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"steps": 2, "fail_all": True}))
    with pytest.raises(SpeedError, match="speed probe probe0 failed: loss became NaN"):
        choose_parallel(_plan(), _launchers([]), cores=2)
