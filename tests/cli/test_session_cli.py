"""status, report, pause, list and the user-mistake paths, through Typer's CliRunner on written sessions."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from agent.cli import app, common
from tests.cli.session_builder import SessionBuilder

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    # Rich sizes the shared console once; a wide one keeps table cells on one line for the asserts.
    monkeypatch.setattr(common.console, "width", 220)
    monkeypatch.setattr(common.err_console, "width", 220)


@pytest.fixture
def runs(tmp_path):
    old = SessionBuilder(tmp_path, session_id="s-20261125-100000", goal="an older session")
    old.trial("t0000", before=0.5, after=0.51, n=200)
    new = SessionBuilder(tmp_path, session_id="s-20261125-120000", goal="raise dev accuracy, 3 trials")
    new.trial("t0000", after=0.62, hparams={"learning_rate": 1e-4}, rationale="calibrated recipe")
    new.trial("t0001", after=0.45, hparams={"learning_rate": 1e-3}, rationale="higher lr")
    new.trial(
        "t0002",
        hparams={"learning_rate": 8e-4},
        round_=2,
        error={"kind": "oom", "message": "CUDA out of memory"},
    )
    return tmp_path


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_report_defaults_to_latest_session(runs):
    result = invoke("report", "--runs-dir", str(runs))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "s-20261125-120000" in out and "an older session" not in out
    assert "t0000: dev 62.0% vs the base's 40.0% (n=400), +22.0 ± 2.7 points paired: beats the base" in out
    assert "Best trial t0000" in out
    assert f"reproduce: openrl-agent trial run {runs / 's-20261125-120000/trials/t0000/spec.json'}" in out
    assert "oom" in out and "CUDA out of memory" in out
    assert "calibrated recipe" in out


def test_report_markdown_and_json_forms(runs):
    md = invoke("report", "s-20261125-120000", "--format", "markdown", "--runs-dir", str(runs))
    assert md.exit_code == 0
    assert md.output.startswith("# openrl-agent report: s-20261125-120000")
    assert "| 1 | t0000 | succeeded | 62.0% | +22.0 ± 3.4 |" in md.output
    js = invoke("report", "s-20261125-120000", "--format", "json", "--runs-dir", str(runs))
    facts = json.loads(js.output)
    assert facts["best"]["trial_id"] == "t0000" and facts["verdict"]["beats_base"]
    assert [f["kind"] for f in facts["failures"]] == ["oom"]


def test_report_on_old_session_says_no_gain_beyond_noise(runs):
    result = invoke("report", str(runs / "s-20261125-100000"), "--format", "markdown")
    assert result.exit_code == 0
    assert "not a significant gain over the base on dev" in result.output


def test_report_plot(runs, tmp_path):
    png = tmp_path / "curves.png"
    result = invoke("report", "--runs-dir", str(runs), "--format", "json", "--plot", str(png))
    assert result.exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    bad = invoke("report", "--runs-dir", str(runs), "--plot", str(tmp_path / "curves.pdf"))
    assert bad.exit_code == 1 and "ending in .png" in bad.output


def test_status_and_pause(runs):
    session = runs / "s-20261125-120000"
    finished = invoke("pause", "--runs-dir", str(runs))
    assert finished.exit_code == 0 and "is not running (finished); nothing to pause" in finished.output
    assert not (session / "pause").exists()
    data = json.loads((session / "session.json").read_text())
    data["status"] = {"state": "running", "pid": 2**22 + 7}  # the loop was killed: its pid is gone
    (session / "session.json").write_text(json.dumps(data))
    dead = invoke("status", "--runs-dir", str(runs))
    assert dead.exit_code == 0 and "stopped (agent not running)" in dead.output
    data["status"] = {"state": "running", "pid": os.getpid()}  # as the loop leaves it while it runs
    (session / "session.json").write_text(json.dumps(data))
    paused = invoke("pause", "--runs-dir", str(runs))
    assert paused.exit_code == 0 and "pause requested for s-20261125-120000" in paused.output
    assert (session / "pause").exists()
    status = invoke("status", "--runs-dir", str(runs))
    assert status.exit_code == 0
    assert "pausing" in status.output and "t0001" in status.output and "45.0%" in status.output


def test_list(runs):
    result = invoke("list", "--runs-dir", str(runs))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    old = next(i for i, line in enumerate(lines) if "s-20261125-100000" in line)
    new = next(i for i, line in enumerate(lines) if "s-20261125-120000" in line)
    assert old < new
    assert "62.0% (t0000)" in lines[new] and "3/3" in lines[new]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "nope"], "no session 'nope'"),
        (["status", "nope"], "no session 'nope'"),
        (["pause", "nope"], "no session 'nope'"),
        (["resume", "nope"], "no session 'nope'"),
    ],
)
def test_unknown_session_is_one_red_line(tmp_path, args, message):
    result = invoke(*args, "--runs-dir", str(tmp_path))
    assert result.exit_code == 1
    assert message in result.output and "openrl-agent list" in result.output
    assert "Traceback" not in result.output


def test_empty_runs_dir(tmp_path):
    result = invoke("report", "--runs-dir", str(tmp_path / "none"))
    assert result.exit_code == 1
    assert "no sessions under" in result.output and "openrl-agent start" in result.output
    listed = invoke("list", "--runs-dir", str(tmp_path / "none"))
    assert listed.exit_code == 0 and "no sessions under" in listed.output


def test_k8s_without_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = invoke("start", "raise dev accuracy", "--launcher", "k8s", "--runs-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "--launcher k8s needs cluster credentials" in result.output
    assert not any(tmp_path.iterdir())  # no session directory was created


@pytest.mark.parametrize("command", ["start", "status", "report", "pause", "resume", "list"])
def test_help_has_examples(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Examples" in result.output and f"openrl-agent {command}" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--planner", "gemini"], "GEMINI_API_KEY"),
        (["--config", "/nonexistent/space.toml"], "/nonexistent/space.toml"),
        (["--model", "/nonexistent/gemma"], "model directory /nonexistent/gemma does not exist"),
        (["--model", "builtin:huge-gemma"], "unknown built-in model builtin:huge-gemma"),
        (["--trials", "0"], "--trials"),
    ],
)
def test_start_mistakes_are_one_line_and_create_nothing(tmp_path, monkeypatch, args, message):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    result = invoke("start", "raise dev accuracy", *args, "--runs-dir", str(tmp_path / "runs"))
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_goal_it_cannot_understand(tmp_path):
    result = invoke("start", "lower the accuracy please", "--planner", "offline", "--runs-dir", str(tmp_path))
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output
