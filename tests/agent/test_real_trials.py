"""The whole path with nothing standing in: the agent loop launches real `python -m rl_core.trial`
runs of the built-in micro policy through the real LocalLauncher, collects their result.json and
ranks them. Kept to one GRPO step and a handful of dev items per trial."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from agent.api import create_session, plan_goal, run_session
from agent.session import open_study
from tools.leaderboard import leaderboard
from tools.trials import curve_summary

pytestmark = pytest.mark.slow

TINY = """
[params.group_size]
fixed = 2
[params.prompts_per_step]
fixed = 2
[params.max_steps]
fixed = 1
[fixed]
"hparams.max_new_tokens" = 16
"hparams.warmup_steps" = 0
"eval.samples" = 4
"""


def test_agent_runs_real_micro_trials_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    config = tmp_path / "space.toml"
    config.write_text(TINY)
    plan = plan_goal("raise dev accuracy of builtin:micro-gemma, 2 trials, 2 at a time",
                     {"planner": "offline", "eval_limit": 4, "config": str(config), "pruner": "none",
                      "trial_seconds": 120})
    session_dir = create_session(plan, tmp_path / "runs")
    events: list[dict] = []
    summary = run_session(session_dir, events.append, poll_s=0.2)  # the launcher the plan names: local

    assert summary["state"] == "done" and summary["finished"] == 2
    study = open_study(session_dir)
    rows = leaderboard(session_dir)
    failures = [(r["trial_id"], r["error"]) for r in rows if r["status"] != "succeeded"]
    assert not failures, failures
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    for row in rows:
        tdir = session_dir / "trials" / row["trial_id"]
        assert 0.0 <= row["dev_accuracy_after"] <= 1.0 and row["steps"] == 1
        assert (tdir / "trial.log").exists() and curve_summary(tdir)["steps"] == 1
    assert {e["type"] for e in events} >= {"plan", "round", "trial_started", "trial_finished", "session_done"}
