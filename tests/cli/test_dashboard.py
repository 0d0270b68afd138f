"""`openrl-agent dashboard`: the real optuna-dashboard server, started by the CLI in a subprocess on a
free port, over a session the real loop ran (scripted trial subprocesses); read back through the
dashboard's own JSON API (/api/studies, /api/studies/<id>), as its web page reads it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent.api import create_session, plan_goal, run_session
from tests.agent.support import scripted_launcher
from tools.leaderboard import leaderboard

CLI = str(Path(sys.executable).with_name("openrl-agent"))


@pytest.fixture
def session_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.02, "steps": 2}))
    session_dir = create_session(plan_goal("raise dev accuracy, 3 trials, 2 at a time", {"planner": "offline"}),
                                 tmp_path / "runs")
    run_session(session_dir, None, launcher=scripted_launcher(session_dir, 2), poll_s=0.05)
    return session_dir


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _attrs(trial: dict) -> dict:
    return {a["key"]: a["value"] for a in trial["user_attrs"]}


def _serve(session_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([CLI, "dashboard", session_dir.name, "--runs-dir", str(session_dir.parent), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # the URL comes first, before any request is served
    if "http://" not in line:
        proc.kill()
        pytest.fail(f"no URL from the dashboard command: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, line.split("http://")[1].split()[0]


def test_the_dashboard_serves_the_sessions_trials_with_status_dev_parent_and_test_figures(session_dir):
    pytest.importorskip("optuna_dashboard", reason="the dashboard extra is not installed: pip install -e '.[dashboard]'")
    rows = {r["trial_id"]: r for r in leaderboard(session_dir)}
    assert rows["t0002"]["parent"] == "t0000"
    proc, address = _serve(session_dir)
    try:
        base = "http://" + address.split("/")[0]
        (study,) = _get(f"{base}/api/studies")["study_summaries"]
        assert study["study_name"] == "research" and address.endswith(f"/dashboard/studies/{study['study_id']}")
        detail = _get(f"{base}/api/studies/{study['study_id']}")
        trials = {_attrs(t)["trial_id"]: t for t in detail["trials"]}
        assert set(trials) == {"t0000", "t0001", "t0002"}
        for tid, row in rows.items():
            attrs = _attrs(trials[tid])
            assert attrs["status"] == "succeeded" and trials[tid]["state"] == "Complete"
            assert float(attrs["dev_accuracy_after"]) == pytest.approx(row["dev_accuracy_after"])
            assert float(attrs["dev_accuracy_before"]) == pytest.approx(row["dev_accuracy_before"])
            assert attrs["rationale"] == row["rationale"] and attrs["planner"] == "offline"
            assert "test_accuracy" not in attrs  # no confirmation yet
        assert _attrs(trials["t0002"])["parent"] == "t0000" and _attrs(trials["t0002"])["action"] == "continue"
        sortable = {a["key"] for a in detail["union_user_attrs"] if a["sortable"]}
        assert {"dev_accuracy_after", "gain"} <= sortable  # numbers: sortable columns in the trials table

        # The loop's confirmation lands while the dashboard runs: the next poll shows it.
        confirm = {"split": "test", "n": 100, "base": {"accuracy": 0.31, "stderr": 0.046},
                   "trials": [{"trial_id": "t0002", "dev_accuracy": 0.62, "test_accuracy": 0.55, "test_stderr": 0.05,
                               "diff": 0.24, "diff_se": 0.05, "p_mcnemar": 0.001, "p_sign": 0.0005, "p_holm": 0.002,
                               "beats_base": True},
                              {"trial_id": "t0000", "dev_accuracy": 0.6, "test_accuracy": 0.5, "test_stderr": 0.05,
                               "diff": 0.19, "diff_se": 0.05, "p_mcnemar": 0.003, "p_holm": 0.003, "beats_base": True}],
                   "winner": "t0002", "holds": True, "text": "t0002 holds on test: 55% vs 31%"}
        (session_dir / "confirm.json").write_text(json.dumps(confirm))
        time.sleep(2.5)  # the dashboard's own trial cache lives 2 s
        trials = {_attrs(t)["trial_id"]: _attrs(t) for t in _get(f"{base}/api/studies/{study['study_id']}")["trials"]}
        assert (trials["t0002"]["test_accuracy"], trials["t0002"]["test_diff"], trials["t0002"]["p_holm"]) == (
            "0.55", "0.24", "0.002")
        assert trials["t0002"]["p_sign"] == "0.0005"  # the exact test the winner rule decides on
        assert trials["t0002"]["test_winner"] == "True" and trials["t0000"]["test_winner"] == "False"
        assert "test_accuracy" not in trials["t0001"]  # not confirmed: no test figure invented
        (study,) = _get(f"{base}/api/studies")["study_summaries"]
        study_attrs = {a["key"]: a["value"] for a in study["user_attrs"]}
        assert study_attrs["test_base_accuracy"] == "0.31" and study_attrs["test_winner"] == "t0002"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # nothing was written into the journal: the session's own study is unchanged
    assert "test_accuracy" not in (session_dir / "study.journal").read_text()


def test_a_busy_port_and_an_unknown_session_are_one_line(session_dir):
    pytest.importorskip("optuna_dashboard", reason="the dashboard extra is not installed: pip install -e '.[dashboard]'")
    proc, address = _serve(session_dir)
    try:
        port = address.split("/")[0].split(":")[1]
        busy = subprocess.run([CLI, "dashboard", session_dir.name, "--runs-dir", str(session_dir.parent),
                               "--port", port], capture_output=True, text=True, timeout=120)
        assert busy.returncode == 1 and busy.stderr.startswith(f"error: cannot serve on 127.0.0.1:{port}")
        assert "Traceback" not in busy.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    missing = subprocess.run([CLI, "dashboard", "s-nope", "--runs-dir", str(session_dir.parent)],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "no session 's-nope'" in missing.stderr


def test_without_the_extra_it_says_the_pip_command(session_dir, monkeypatch):
    from typer.testing import CliRunner

    from agent.cli import app

    for name in [m for m in sys.modules if m.startswith("optuna_dashboard")]:
        monkeypatch.delitem(sys.modules, name)  # as if the extra were missing
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    result = CliRunner().invoke(app, ["dashboard", session_dir.name, "--runs-dir", str(session_dir.parent)])
    assert result.exit_code == 1
    assert "optuna-dashboard is not installed; pip install -e '.[dashboard]' (or pip install optuna-dashboard)" in (
        " ".join(result.output.split()))


def test_the_dashboard_uses_only_public_optuna_names():
    """tools/dashboard.py subclasses Optuna's storage: private modules or attributes (optuna.study._frozen,
    FrozenStudy._study_id) may change in any release."""
    import ast

    import tools.dashboard

    tree = ast.parse(Path(tools.dashboard.__file__).read_text())
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna"):
            private += [f"from {node.module} import {a.name}" for a in node.names
                        if any(part.startswith("_") for part in [*node.module.split("."), a.name])]
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
            private.append(f"line {node.lineno}: {ast.unparse(node)}")
    assert private == []
