"""The research loop end to end: real LangGraph graph, real Optuna journal, real LocalLauncher
running scripted trial subprocesses (tests/agent/scripted_trial.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from optuna.trial import TrialState

from agent.api import create_session, load_session, plan_goal, request_pause, resume_session, run_session
from agent.session import load_rounds, open_study
from tests.agent.support import ListPlanner, scripted_launcher
from tools.leaderboard import leaderboard


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.02, "steps": 2}))


def _session(tmp_path: Path, goal: str = "raise dev accuracy", **overrides) -> Path:
    return create_session(plan_goal(goal, {"planner": "offline", **overrides}), tmp_path / "runs")


def _run(session_dir: Path, events: list | None = None, planner=None, resume: bool = False, **kw):
    fn = resume_session if resume else run_session
    on_event = (events.append if events is not None else None)
    parallel = load_session(session_dir)["constraints"]["parallel"]
    return fn(session_dir, on_event, launcher=scripted_launcher(session_dir, parallel), planner=planner,
              poll_s=0.05, **kw)


def _finished(session_dir: Path) -> list:
    study = open_study(session_dir)
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)]


def test_session_runs_to_its_trial_budget(tmp_path: Path, monkeypatch):
    # slow enough to see progress; t0001 slower still, so the baseline t0000 is the trial round 2
    # sees finished (which of the two finished first used to be a race that busy cores could flip)
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.2, "steps": 2, "slow_ids": {"t0001": 1.5}}))
    session_dir = _session(tmp_path, "raise dev accuracy, 4 trials, 2 at a time")
    events: list[dict] = []
    summary = _run(session_dir, events)
    assert summary["state"] == "done" and summary["reason"] == "trial budget spent"
    assert summary["finished"] == 4
    study = open_study(session_dir)
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    types = [e["type"] for e in events]
    assert types[0] == "plan" and types[-1] == "session_done"
    assert types.count("trial_started") == 4 and types.count("trial_finished") == 4
    first_round = next(e for e in events if e["type"] == "round")
    assert [p["trial_id"] for p in first_round["proposals"]] == ["t0000", "t0001"]
    assert all(p["rationale"] and "learning_rate" in p["params"] and "execution_match" in p["reward"]
               for p in first_round["proposals"])
    assert any(e["type"] == "trial_progress" and e["max_steps"] for e in events)
    rows = leaderboard(session_dir)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    by_id = {r["trial_id"]: r for r in rows}
    assert by_id["t0000"]["rationale"].startswith("baseline") and by_id["t0000"]["action"] == "fresh"
    # Round 2 builds on the best trial finished when it is proposed (the calibrated baseline): continue it.
    proposed_at = next(i for i, e in enumerate(events) if e["type"] == "round"
                       and any(p["trial_id"] == "t0002" for p in e["proposals"]))
    done_before = {e["trial_id"] for e in events[:proposed_at] if e["type"] == "trial_finished"}
    assert done_before == {"t0000"}
    assert (by_id["t0002"]["action"], by_id["t0002"]["parent"]) == ("continue", "t0000")
    assert by_id["t0002"]["params"] == by_id["t0000"]["params"]
    assert by_id["t0002"]["steps_total"] == by_id["t0000"]["steps"] + by_id["t0002"]["steps"]
    assert rows[0]["trial_id"] != "t0001" and rows[0]["dev_accuracy_after"] > by_id["t0000"]["dev_accuracy_after"]
    assert [r["round"] for r in load_rounds(session_dir)] == sorted({r["round"] for r in rows})
    assert load_session(session_dir)["status"]["state"] == "done"
    # Resuming a finished session does nothing more.
    assert _run(session_dir, resume=True)["finished"] == 4 and len(open_study(session_dir).trials) == 4


def test_slots_are_refilled_as_trials_finish_not_in_lock_step(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.02, "steps": 2,
                                                     "slow_if": ["learning_rate", 1e-4, 0.8]}))
    session_dir = _session(tmp_path, "raise accuracy, 4 trials, 2 at a time")
    events: list[dict] = []
    _run(session_dir, events, planner=ListPlanner([{"learning_rate": 1e-4}, {"learning_rate": 2e-4},
                                                   {"learning_rate": 3e-4}, {"learning_rate": 4e-4}]))
    order = [(e["type"], e.get("trial_id")) for e in events if e["type"] in ("trial_started", "trial_finished")]
    slow_done = order.index(("trial_finished", "t0000"))
    assert order.index(("trial_started", "t0003")) < slow_done  # two trials ran beside the slow one


def test_failed_trials_never_end_the_session_and_repeats_are_surfaced(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.01, "steps": 1, "fail_all": True}))
    session_dir = _session(tmp_path, "raise accuracy, 3 trials, 1 at a time")
    events: list[dict] = []
    summary = _run(session_dir, events)
    assert summary["reason"] == "trial budget spent" and summary["failed"] == 3 and summary["best"] is None
    repeated = [e for e in events if e["type"] == "repeated_failure"]
    assert repeated[-1]["count"] == 3 and repeated[-1]["error"]["kind"] == "nan_loss"
    assert repeated[-1]["signature"] == "nan_loss: loss became NaN at step #"
    status = load_session(session_dir)["status"]
    assert list(status["repeated_failures"].values())[0]["trial_ids"] == ["t0000", "t0001", "t0002"]
    assert all(r["error"]["kind"] == "nan_loss" for r in leaderboard(session_dir))


def test_goal_met_stops_early(tmp_path: Path):
    session_dir = _session(tmp_path, "get accuracy to 60%, 6 trials, 1 at a time")
    summary = _run(session_dir)
    assert summary["reason"] == "goal met" and summary["finished"] == 1  # the baseline scores 0.70


def test_time_budget_stops_launching(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.5, "steps": 2}))
    session_dir = _session(tmp_path, "raise accuracy, 6 trials, 1 at a time", budget_minutes=0.01)
    summary = _run(session_dir)
    # Nothing is launched that cannot finish: 0.6 s cannot hold a trial and its evaluation.
    assert summary["reason"] == "time budget spent" and summary["finished"] == 0
    assert not any((session_dir / "trials").iterdir())


def test_pause_cancels_local_trials_and_resume_reruns_them_once(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.3, "steps": 4}))
    session_dir = _session(tmp_path, "raise accuracy, 3 trials, 2 at a time")
    events: list[dict] = []

    def pause_on_progress(event: dict) -> None:
        events.append(event)
        if event["type"] == "trial_progress" and not (session_dir / "pause").exists():
            request_pause(session_dir)

    summary = run_session(session_dir, pause_on_progress, launcher=scripted_launcher(session_dir, 2), poll_s=0.05)
    assert summary["state"] == "paused" and summary["finished"] == 0
    assert load_session(session_dir)["status"]["state"] == "paused"
    assert {r["status"] for r in leaderboard(session_dir)} == {"interrupted"}
    assert not (session_dir / "pause").exists()

    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.02, "steps": 2}))
    summary = _run(session_dir, resume=True)
    assert summary["state"] == "done" and summary["finished"] == 3
    study = open_study(session_dir)
    assert len(study.trials) == 3 and all(t.state == TrialState.COMPLETE for t in study.trials)
    for trial_dir in (session_dir / "trials").iterdir():  # re-run from scratch: one clean run each
        lines = (trial_dir / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["step"] for x in lines] == [1, 2]


def test_a_proposal_enqueued_before_a_crash_is_used_not_lost(tmp_path: Path):
    session_dir = _session(tmp_path, "raise accuracy, 2 trials, 1 at a time")
    open_study(session_dir).enqueue_trial({"learning_rate": 3e-4}, user_attrs={"rationale": "left over", "round": 1})
    _run(session_dir)
    study = open_study(session_dir)
    assert len(study.trials) == 2 and study.trials[0].params["learning_rate"] == 3e-4
    assert study.trials[0].user_attrs["rationale"] == "left over"


def test_pruner_stops_a_clearly_worse_trial(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.25, "steps": 4}))
    session_dir = _session(tmp_path, "raise accuracy, 3 trials, 1 at a time", eval_every_steps=1)
    events: list[dict] = []
    _run(session_dir, events, planner=ListPlanner([{"learning_rate": 1e-4}, {"learning_rate": 1.1e-4},
                                                   {"learning_rate": 1e-5}]))
    rows = {r["trial_id"]: r for r in leaderboard(session_dir)}
    assert rows["t0002"]["status"] == "pruned" and rows["t0002"]["pruned_at_step"] is not None
    assert {"type": "trial_finished", "trial_id": "t0002", "status": "pruned", "score": None,
            "error": None} in events
    assert len(_finished(session_dir)) == 3


def test_a_second_loop_on_the_same_session_is_refused(tmp_path: Path):
    import fcntl

    from agent.session import SessionError

    session_dir = _session(tmp_path)
    with open(session_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SessionError, match="already running"):
            _run(session_dir)


def test_bad_kubernetes_settings_are_one_clear_error(tmp_path: Path):
    from agent.api import make_launcher
    from agent.session import SessionError

    plan = plan_goal("raise accuracy", {"launcher": "k8s", "launcher_options": {"namespace": "Bad_NS"}}).to_json()
    with pytest.raises(SessionError, match="not a valid Kubernetes name"):
        make_launcher(plan, tmp_path / "runs" / "s-1")
    plan["launcher"] = {"name": "k8s", "colour": "red"}
    with pytest.raises(SessionError, match="launcher settings"):
        make_launcher(plan, tmp_path / "runs" / "s-1")


def test_gemini_planner_in_the_loop_feedback_and_fallback_recorded(tmp_path: Path, gemini_server, monkeypatch):
    from agent.session import save_session

    monkeypatch.setenv("OPENRL_AGENT_GEMINI_BASE_URL", gemini_server.url)
    gemini_server.replies += [
        ("json", {"understood": True, "trials": 2, "parallel": 1}),  # the goal
        ("json", {"proposals": [{"params": {"learning_rate": 0.5, "lora_rank": 16}, "rationale": "go big"}]}),
        ("status", 503), ("status", 503),  # round 2: retries exhausted -> offline
    ]
    plan = plan_goal("make the warehouse model better with two tries, one at a time", {"pruner": "none"})
    session_dir = create_session(plan, tmp_path / "runs")
    data = load_session(session_dir)
    data["planner"].update(retries=1, backoff_s=0.01, timeout_s=5)
    save_session(session_dir, data)
    summary = run_session(session_dir, None, launcher=scripted_launcher(session_dir, 1), poll_s=0.05)
    assert summary["finished"] == 2
    rounds = load_rounds(session_dir)
    assert rounds[0]["planner"] == "gemini" and "clamped to 0.001" in " ".join(rounds[0]["notes"])
    assert rounds[0]["proposals"][0]["params"]["learning_rate"] == 1e-3
    assert rounds[0]["proposals"][0]["rationale"] == "go big"
    assert rounds[1]["planner"] == "offline (fallback)" and "gemini failed" in rounds[1]["fallback"]
    assert "clamped to 0.001" in gemini_server.prompt(2)  # round 1's correction went back to Gemini
    rows = {r["trial_id"]: r for r in leaderboard(session_dir)}
    assert rows["t0001"]["planner"] == "offline (fallback)"


def test_a_spec_the_runner_would_reject_is_refused_at_plan_time(tmp_path: Path):
    """A pinned value the trial runner would refuse fails before any session exists (it used to
    pass planning and then fail every trial at launch)."""
    from agent.goal import GoalError

    for body in ('[fixed]\n"hparams.group_size" = 1\n', '[params.group_size]\nfixed = 1\n',
                 '[fixed]\n"hparams.learnig_rate" = 1e-4\n', '[params.learning_rate]\nfixed = -1e-4\n'):
        config = tmp_path / "space.toml"
        config.write_text(body)
        with pytest.raises(GoalError, match="group_size|learnig_rate|learning_rate"):
            _session(tmp_path, "raise accuracy, 2 trials, 1 at a time", config=str(config))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_child_reports_its_intermediate_evals_at_its_cumulative_step(tmp_path: Path, monkeypatch):
    """The median pruner compares a branch with the others at the training its weights carry."""
    from agent.planners.base import PlannerResult, Proposal

    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.4, "steps": 4}))  # slow enough to be polled
    session_dir = _session(tmp_path, "raise accuracy, 2 trials, 1 at a time", eval_every_steps=1)

    class BranchSecond:
        name = "branch-second"

        def propose(self, ctx):
            if not ctx.trials:
                return PlannerResult([Proposal({"learning_rate": 2e-4}, "fresh")], self.name)
            return PlannerResult([Proposal({"learning_rate": 1e-4}, "branch", "branch", "t0000")], self.name)

    _run(session_dir, planner=BranchSecond())
    parent, child = sorted(open_study(session_dir).get_trials(), key=lambda t: t.number)
    assert child.user_attrs["parent"] == "t0000" and child.user_attrs["action"] == "branch"
    # Reported while polled: some of steps 1-4 for the parent, the child's own steps + 4.
    assert parent.intermediate_values and set(parent.intermediate_values) <= {1, 2, 3, 4}
    assert child.intermediate_values and set(child.intermediate_values) <= {5, 6, 7, 8}  # after the parent's 4
