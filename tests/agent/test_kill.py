"""`kill -9` of the agent process at several points, then resume: no finished trial is lost and
none is counted twice. Real subprocesses: the agent (tests/agent/agent_proc.py), the real
LocalLauncher, and scripted trial processes that outlive the killed agent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from agent.api import create_session, plan_goal
from agent.session import open_study
from agent.study import trial_id_of

AGENT = Path(__file__).with_name("agent_proc.py")
TRIALS = 4
STEPS = 3

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.15, "steps": STEPS}))


def _agent(session_dir: Path, kill_at: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    args = [sys.executable, str(AGENT), str(session_dir)] + ([kill_at] if kill_at else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def _check_counted_once(session_dir: Path) -> None:
    study = open_study(session_dir)
    trials = study.get_trials()
    assert len(trials) == TRIALS, [t.state for t in trials]  # no trial asked twice
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    # The journal holds exactly one finishing tell per trial.
    finishing = Counter()
    for line in (session_dir / "study.journal").read_text().splitlines():
        op = json.loads(line)
        if op["op_code"] == 6 and op["state"] in (1, 2, 3):
            finishing[op["trial_id"]] += 1
    assert sorted(finishing.values()) == [1] * TRIALS
    for t in trials:  # every finished run is the one counted, and each trial ran once
        tdir = session_dir / "trials" / trial_id_of(t)  # a kill between ask and set_user_attr leaves only the number
        result = json.loads((tdir / "result.json").read_text())
        assert result["metrics"]["dev_accuracy_after"] == t.value
        steps = [json.loads(x)["step"] for x in (tdir / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, STEPS + 1))
        parent = t.user_attrs.get("parent")  # lineage: the study, the spec and the result agree
        assert (result.get("lineage") or {}).get("parent") == parent
        assert (json.loads((tdir / "launch_spec.json").read_text()).get("init_from") or {}).get("trial", "") == \
            (parent or "")


@pytest.mark.parametrize("kill_points", [
    ["round:1"],  # trials asked, none launched
    ["trial_started:1"],  # one launched, the launch step not checkpointed
    ["trial_finished:1", "trial_finished:1"],  # told, the collect step not checkpointed; twice
    ["trial_progress:2", "round:1"],  # trials running detached from the dead agent
    ["trial_started:3"],  # a child (continue/branch of a finished trial) just launched
])
def test_kill_9_then_resume_loses_nothing_and_counts_nothing_twice(tmp_path: Path, kill_points: list[str]):
    session_dir = create_session(plan_goal(f"raise accuracy, {TRIALS} trials, 2 at a time",
                                           {"planner": "offline", "pruner": "none"}), tmp_path / "runs")
    for point in kill_points:
        proc = _agent(session_dir, point)
        assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    final = _agent(session_dir)
    assert final.returncode == 0, final.stderr
    assert f"summary done trial budget spent {TRIALS}" in final.stdout
    _check_counted_once(session_dir)
    children = [t for t in open_study(session_dir).get_trials() if t.user_attrs.get("parent")]
    assert children, "round 2 builds on round 1: some trial has a parent"


def test_kill_9_from_outside_at_arbitrary_moments(tmp_path: Path):
    session_dir = create_session(plan_goal(f"raise accuracy, {TRIALS} trials, 2 at a time",
                                           {"planner": "offline", "pruner": "none"}), tmp_path / "runs")
    for delay in (2.5, 1.2, 0.8):  # after imports: mid-propose, mid-collect, ...
        proc = subprocess.Popen([sys.executable, str(AGENT), str(session_dir)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    final = _agent(session_dir)
    assert final.returncode == 0, final.stdout + final.stderr
    _check_counted_once(session_dir)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_pauses_a_running_agent_process_and_resume_finishes(tmp_path: Path, sig: int):
    session_dir = create_session(plan_goal(f"raise accuracy, {TRIALS} trials, 2 at a time",
                                           {"planner": "offline", "pruner": "none"}), tmp_path / "runs")
    proc = subprocess.Popen([sys.executable, str(AGENT), str(session_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # Ctrl-C (or a service manager's SIGTERM) once the first trial is running
        if line.startswith("event trial_progress"):
            proc.send_signal(sig)
            break
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and "summary paused paused" in out, out
    status = json.loads((session_dir / "session.json").read_text())["status"]
    assert status["state"] == "paused" and status.get("pid") is None
    launched = [json.loads(p.read_text()) for p in (session_dir / "trials").glob("*/launcher.json")]
    assert launched and all(r["state"] != "running" for r in launched)  # no trial runs on alone
    final = _agent(session_dir)
    assert "summary done trial budget spent" in final.stdout, final.stdout + final.stderr
    _check_counted_once(session_dir)
