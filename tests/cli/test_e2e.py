"""Real research sessions on the built-in micro policy: `start` through CliRunner, and `start`, Ctrl-C,
`resume` in a real terminal (pexpect). Trials are tiny (2 GRPO steps, 8 dev questions) but real:
subprocess trial runner, DuckDB rewards, Optuna journal, LangGraph checkpoints.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

import pexpect
import pytest
from typer.testing import CliRunner

from agent.cli import app, common

pytestmark = pytest.mark.slow

TINY_SPACE = """
[params.group_size]
fixed = 2
[params.prompts_per_step]
fixed = 2
[params.max_steps]
fixed = 2
[fixed]
"hparams.max_new_tokens" = 16
"hparams.sampling_rounds" = 1
"hparams.dynamic_sampling" = false
"eval.limit" = 8
"eval.samples" = 2
"""
CLI = str(Path(sys.executable).with_name("openrl-agent"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    (root / "tiny.toml").write_text(TINY_SPACE)
    # A private cache: the micro policy is built once here, never waiting on another process's build.
    env = {"OPENRL_AGENT_CACHE": str(root / "cache"), "COLUMNS": "160"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _session(runs: Path) -> Path:
    (session,) = [p for p in runs.iterdir() if (p / "session.json").exists()]
    return session


def _terminal(args: list[str], timeout: int) -> tuple[pexpect.spawn, io.StringIO]:
    """The CLI in a real pseudo-terminal (so Rich draws its live view), keeping everything it prints."""
    log = io.StringIO()
    child = pexpect.spawn(
        CLI, args, env=dict(os.environ), encoding="utf-8", timeout=timeout, dimensions=(50, 160)
    )
    child.logfile_read = log
    return child, log


def _text(log: io.StringIO) -> str:
    return ANSI.sub("", log.getvalue()).replace("\r", "")


def test_start_runs_a_session_and_report_describes_it(tiny, monkeypatch):
    monkeypatch.setattr(common.console, "width", 200)
    runs = tiny / "runs-a"
    goal = "raise dev accuracy of micro-gemma, 2 trials, 2 at a time"
    result = CliRunner().invoke(
        app,
        # --force-parallel: both trials in round 1 whatever this machine's speed side by side says
        # (the speed check itself is tests/agent/test_speed.py's)
        ["start", goal, "--planner", "offline", "--config", str(tiny / "tiny.toml"), "--runs-dir", str(runs),
         "--force-parallel"],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Plan" in out and "builtin:micro-gemma" in out and "Round 1" in out
    assert "t0000 succeeded" in out and "t0001 succeeded" in out
    session = _session(runs)
    assert f"session {session.name} done (trial budget spent)" in out

    facts = json.loads(
        CliRunner().invoke(app, ["report", "--format", "json", "--runs-dir", str(runs)]).output
    )
    rows = facts["leaderboard"]
    assert sorted(r["trial_id"] for r in rows) == ["t0000", "t0001"]
    assert all(r["status"] == "succeeded" and r["steps"] == 2 and r["max_steps"] == 2 for r in rows)
    assert facts["session"]["state"] == "done" and facts["base"]["n"] == 8
    best = facts["best"]
    assert best["adapter_exists"] and Path(best["adapter_path"]).is_dir()
    assert best["spec"]["budget"]["max_steps"] == 2
    assert facts["curves"]["t0000"]["step"] == [1, 2]
    assert [r["round"] for r in facts["rounds"]] == [1]
    # The headline is the test-split confirmation: both trials and the base, every test question.
    confirm = facts["confirm"]
    assert confirm["n"] == 400 and [t["trial_id"] for t in confirm["trials"]] == [best["trial_id"],
                                                                                   rows[1]["trial_id"]]
    assert facts["verdict"]["source"] == "test" and "sealed test split (n=400)" in facts["verdict"]["text"]
    assert ("beats the base policy on test" in facts["verdict"]["text"]) == confirm["holds"]
    assert [n["trial_id"] for n in facts["tree"]] == sorted(r["trial_id"] for r in rows)

    md = (
        CliRunner()
        .invoke(app, ["report", session.name, "--format", "markdown", "--runs-dir", str(runs)])
        .output
    )
    assert (
        f"## Best trial {best['trial_id']}" in md
        and best["reproduce"] in md
        and facts["verdict"]["text"] in md
    )
    table = CliRunner().invoke(app, ["report", "--runs-dir", str(runs), "--plot", str(tiny / "a.png")])
    assert table.exit_code == 0 and "Leaderboard" in table.output and "Curves per step" in table.output
    assert (tiny / "a.png").stat().st_size > 10_000
    listed = CliRunner().invoke(app, ["list", "--runs-dir", str(runs)]).output
    assert session.name in listed and "2/2" in listed


def test_ctrl_c_pauses_and_resume_finishes_every_trial_once(tiny):
    runs = tiny / "runs-b"
    goal = "raise dev accuracy of micro-gemma, 2 trials, 1 at a time"
    args = [
        "start",
        goal,
        "--planner",
        "offline",
        "--config",
        str(tiny / "tiny.toml"),
        "--runs-dir",
        str(runs),
    ]
    child, log = _terminal(args, timeout=240)
    try:
        child.expect("Round 1")
        child.expect("Running")  # the live view shows t0000 in flight
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    out = _text(log)
    assert child.exitstatus == 0, out[-2000:]
    session = _session(runs)
    assert "pausing: no new trials start" in out
    assert f"paused: continue with `openrl-agent resume {session.name}`" in out
    assert json.loads((session / "session.json").read_text())["status"]["state"] == "paused"
    status = CliRunner().invoke(app, ["status", "--runs-dir", str(runs)])
    assert status.exit_code == 0 and "paused" in status.output

    resumed, log = _terminal(["resume", "--runs-dir", str(runs)], timeout=300)
    try:
        resumed.expect(pexpect.EOF)
    finally:
        resumed.close(force=True)
    out = _text(log)
    assert resumed.exitstatus == 0, out[-2000:]
    assert f"resuming {session.name}" in out and f"session {session.name} done (trial budget spent)" in out

    from tools.leaderboard import leaderboard

    rows = leaderboard(session)
    assert sorted(r["trial_id"] for r in rows) == ["t0000", "t0001"]  # each trial exactly once
    assert all(r["status"] == "succeeded" for r in rows)
    for trial in ("t0000", "t0001"):
        steps = [json.loads(line)["step"] for line in (session / "trials" / trial / "metrics.jsonl").open()]
        assert steps == [1, 2], f"{trial} counted a step twice or lost one: {steps}"
    proposed = [
        p["trial_id"] for r in json.loads((session / "rounds.json").read_text()) for p in r["proposals"]
    ]
    assert sorted(proposed) == ["t0000", "t0001"]
