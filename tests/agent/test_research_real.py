"""Real research sessions on builtin:micro-gemma (real trial processes, DuckDB, Optuna, LangGraph):
the wall-clock budget holds with the confirmation inside it, and the test split stays sealed."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from agent.api import create_session, make_launcher, plan_goal, run_session
from agent.confirm import CONFIRM_SESSION, run_confirmation
from sql_env.datasets.store import dataset_dir

pytestmark = pytest.mark.slow

SMALL = {"eval_limit": 60}
SMALL_SPACE = """
[fixed]
"hparams.group_size" = 4
"hparams.prompts_per_step" = 4
"hparams.max_new_tokens" = 16
"hparams.sampling_rounds" = 1
"eval.samples" = 4
"""


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    for key in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)


def _plan(tmp_path: Path, goal: str, extra: str = "", **overrides):
    config = tmp_path / "small.toml"
    config.write_text(SMALL_SPACE + extra)
    return plan_goal(goal, {"planner": "offline", "pruner": "none", "config": str(config), **SMALL, **overrides})


def test_a_four_minute_budget_ends_within_4_2_minutes_confirmation_included(tmp_path: Path):
    # 40 trials cannot fit: the time budget, not the count, ends the session.
    plan = _plan(tmp_path, "raise dev accuracy of micro-gemma, 40 trials, 2 at a time", budget_minutes=4,
                 extra="[params.max_steps]\nfixed = 100000\n")  # each trial ends at its time share
    session_dir = create_session(plan, tmp_path / "runs")
    events: list[dict] = []
    t0 = time.monotonic()
    summary = run_session(session_dir, events.append)
    wall = time.monotonic() - t0
    assert wall <= 4.2 * 60, f"the session took {wall:.0f} s for a 4-minute budget"
    assert summary["state"] == "done" and summary["reason"] == "time budget spent" and summary["finished"] >= 2
    assert wall >= 3.5 * 60, f"the budget was not used ({wall:.0f} s)"
    confirm = json.loads((session_dir / "confirm.json").read_text())
    assert confirm["n"] == 400 and confirm["trials"], confirm
    assert any(e["type"] == "confirm_done" for e in events)
    started = [e for e in events if e["type"] == "trial_started"]
    assert all(e["max_seconds"] and e["max_seconds"] >= 15 for e in started)  # nothing launched that cannot finish
    used = json.loads((session_dir / "clock.json").read_text())["used_s"]
    assert used <= 4.2 * 60


def test_nothing_reads_the_test_split_before_the_confirmation(tmp_path: Path):
    """Trials run on a copy of the dataset whose test split is not there: had anything in the loop
    (trials, planner, selection) read it, a trial would fail. Then the split is put back and the
    confirmation, the one reader, evaluates on it."""
    data = tmp_path / "data"
    shutil.copytree(dataset_dir("builtin"), data)
    sealed = tmp_path / "test.jsonl.sealed"
    (data / "test.jsonl").rename(sealed)
    plan = _plan(tmp_path, "raise dev accuracy of micro-gemma, 2 trials, 1 at a time", dataset=str(data),
                 max_steps=2)
    session_dir = create_session(plan, tmp_path / "runs")
    events: list[dict] = []
    summary = run_session(session_dir, events.append)
    assert summary["finished"] == 2 and summary["failed"] == 0
    assert any(e["type"] == "confirm_skipped" for e in events) and not (session_dir / "confirm.json").exists()
    specs = [json.loads(p.read_text()) for p in (session_dir / "trials").glob("*/spec.json")]
    assert specs and all(s["eval"]["split"] == "dev" and s["train_split"] == "train" for s in specs)

    sealed.rename(data / "test.jsonl")
    session = json.loads((session_dir / "session.json").read_text())
    verdict = run_confirmation(session_dir, session, make_launcher(session, session_dir / CONFIRM_SESSION),
                               emit=events.append, poll_s=0.2)
    n_test = sum(1 for line in (data / "test.jsonl").read_text().splitlines() if line.strip())
    assert verdict is not None and verdict["n"] == n_test and len(verdict["trials"]) == 2
    jobs = session_dir / CONFIRM_SESSION / "trials"
    assert sorted(p.name for p in jobs.iterdir()) == sorted(["base", *[t["trial_id"] for t in verdict["trials"]]])
