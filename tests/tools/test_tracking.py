"""Trackers fed from a contract-shaped trial directory, read back with each library's own reader:
TensorBoard's EventAccumulator, and MLflow's client against a real `mlflow server` on a free port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tools.tracking import mirror_trial


def _trial(runs: Path) -> Path:
    tdir = runs / "s-20261202-010000" / "trials" / "t0001"
    tdir.mkdir(parents=True)
    spec = {"trial_id": "t0001", "session": "s-20261202-010000", "model": "builtin:micro-gemma",
            "hparams": {"learning_rate": 2e-4, "group_size": 8}, "budget": {"max_steps": 3, "max_seconds": 45}}
    (tdir / "spec.json").write_text(json.dumps(spec))
    rows = [{"step": s, "reward_mean": 0.2 * s, "batch_accuracy": 0.1 * s, "kl": 0.01 * s, "entropy": 1.0,
             "grad_norm": 0.5, "t_generate": 1.0, "t_score": 0.1, "t_train": 0.4, "reward/executes": 0.3}
            for s in (1, 2, 3)]
    (tdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    evals = [{"step": 0, "split": "dev", "accuracy": 0.40, "n": 50}, {"step": 3, "split": "dev", "accuracy": 0.46, "n": 50}]
    (tdir / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    (tdir / "result.json").write_text(json.dumps({"trial_id": "t0001", "status": "succeeded", "spec": spec,
                                                  "metrics": {"dev_accuracy_after": 0.46, "steps": 3}}))
    return tdir


def test_tensorboard_event_files_hold_every_step_and_eval(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tracking]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tdir = _trial(tmp_path)
    assert mirror_trial(tdir, {"backends": ["tensorboard"]}, tmp_path) == []
    acc = EventAccumulator(str(tmp_path / "tensorboard" / "s-20261202-010000" / "t0001"))
    acc.Reload()
    assert [(e.step, round(e.value, 3)) for e in acc.Scalars("train/reward_mean")] == [(1, 0.2), (2, 0.4), (3, 0.6)]
    assert {"train/kl", "train/grad_norm", "train/t_generate", "train/reward_executes"} <= set(acc.Tags()["scalars"])
    assert [(e.step, round(e.value, 2)) for e in acc.Scalars("eval/dev_accuracy")] == [(0, 0.4), (3, 0.46)]


def test_a_missing_library_is_a_warning_with_the_pip_command(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.startswith("tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)  # as if the extra were missing
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert mirror_trial(_trial(tmp_path), {"backends": ["tensorboard"]}, tmp_path) == [
        "tracking: tensorboard is not installed; pip install -e '.[tracking]' (or pip install tensorboard)"]
    assert not (tmp_path / "tensorboard").exists()


def test_a_tracker_that_is_down_costs_a_warning_not_the_trial(tmp_path):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[tracking]'")
    tdir = _trial(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    start = time.monotonic()
    warnings = mirror_trial(tdir, {"backends": ["mlflow", "nope"], "mlflow_uri": f"http://127.0.0.1:{port}"},
                            tmp_path)
    assert len(warnings) == 2 and warnings[0].startswith("tracking: mlflow failed for t0001")
    assert "unknown backend 'nope'" in warnings[1]
    assert time.monotonic() - start < 60  # MLflow's own retries would take minutes


def test_a_damaged_result_is_a_warning_that_names_the_file(tmp_path):
    """result.json is read through rl_core.trialdir: a damaged one is reported as such, by name."""
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tracking]'")
    tdir = _trial(tmp_path)
    (tdir / "result.json").write_text('{"status": "succ')
    [warning] = mirror_trial(tdir, {"backends": ["tensorboard"]}, tmp_path)
    assert warning.startswith("tracking: tensorboard failed for t0001: TrialDirError")
    assert f"{tdir / 'result.json'} is damaged" in warning


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[tracking]'")
    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                             "--artifacts-destination", str(root / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=(root / "server.log").open("w"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("mlflow server did not start: " + (root / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        yield url
    finally:  # the server's workers can take minutes to exit on starved cores: then kill them
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.mark.slow  # a real mlflow server starts in 10-60 s on a busy 2-core machine
def test_mlflow_run_per_trial_nested_under_the_session(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    tdir = _trial(tmp_path)
    tags = {"planner": "gemini", "rationale": "branch from the best", "parent": "t0000"}
    assert mirror_trial(tdir, {"backends": ["mlflow"], "mlflow_uri": mlflow_server}, tmp_path, tags) == []
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("openrl-agent/s-20261202-010000")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    session, trial = runs["s-20261202-010000"], runs["t0001"]
    assert trial.data.tags["mlflow.parentRunId"] == session.info.run_id
    assert trial.data.tags["planner"] == "gemini" and trial.data.tags["parent"] == "t0000"
    assert trial.data.params["hparams.learning_rate"] == "0.0002" and trial.data.params["budget.max_seconds"] == "45"
    history = client.get_metric_history(trial.info.run_id, "train/reward_mean")
    assert [(m.step, round(m.value, 3)) for m in history] == [(1, 0.2), (2, 0.4), (3, 0.6)]
    assert [m.step for m in client.get_metric_history(trial.info.run_id, "eval/dev_accuracy")] == [0, 3]
    assert trial.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(trial.info.run_id)] == ["result.json"]
    assert mirror_trial(tdir, {"backends": ["mlflow"], "mlflow_uri": mlflow_server}, tmp_path) == []
    again = client.search_runs([experiment.experiment_id], filter_string="tags.`openrl.kind` = 'session'")
    assert len(again) == 1  # the session's parent run is found again, not duplicated


@pytest.mark.slow
def test_mlflow_names_the_result_figures_by_split_pass_at_k_included(tmp_path, mlflow_server):
    """A trial scored on test logs test_* figures (schema 2 logged dev_* for them), and pass@k under a
    name MLflow accepts ('@' is not one: the whole mirror of such a trial failed)."""
    from mlflow.tracking import MlflowClient

    from rl_core.trialdir import ResultMetrics, SplitFigures, make_result, write_result

    tdir = _trial(tmp_path)
    spec = {**json.loads((tdir / "spec.json").read_text()), "session": "s-test-split"}  # its own experiment
    (tdir / "spec.json").write_text(json.dumps(spec))
    scored = SplitFigures("test", accuracy_after=0.46, stderr_after=0.07, n=50, accuracy_before=0.40,
                          stderr_before=0.07, gain=0.06, gain_stderr_paired=0.03)
    metrics = ResultMetrics(eval=scored, steps=3, wall_s=9.0, train_s=5.0, pass_k=8, pass_before=0.6, pass_after=0.7)
    write_result(tdir, make_result("t0001", "succeeded", metrics=metrics, spec=spec))
    assert mirror_trial(tdir, {"backends": ["mlflow"], "mlflow_uri": mlflow_server}, tmp_path) == []
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("openrl-agent/s-test-split")
    [run] = client.search_runs([experiment.experiment_id], filter_string="tags.`openrl.kind` = 'trial'")
    logged = {k: v for k, v in run.data.metrics.items() if k.startswith("result/")}
    assert logged["result/test_accuracy_after"] == 0.46 and logged["result/test_gain_stderr_paired"] == 0.03
    assert logged["result/test_pass_at_8_after"] == 0.7 and logged["result/steps"] == 3
    assert not any("dev" in k for k in logged)


# --- a session's trials, mirrored as they finish (agent.api.run_session with plan.tracking) -------
def _tracked_session(tmp_path: Path, monkeypatch, tracking: dict) -> tuple[Path, list[dict], dict]:
    from agent.api import create_session, plan_goal, run_session
    from tests.agent.support import scripted_launcher

    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.02, "steps": 2}))
    plan = plan_goal("raise dev accuracy, 3 trials, 2 at a time", {"planner": "offline", "tracking": tracking})
    session_dir = create_session(plan, tmp_path / "runs")
    events: list[dict] = []
    summary = run_session(session_dir, events.append, launcher=scripted_launcher(session_dir, 2), poll_s=0.05)
    return session_dir, events, summary


def test_a_session_with_a_tracker_down_finishes_and_says_so_once_per_trial(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tracking]'")
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[tracking]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    session_dir, events, summary = _tracked_session(
        tmp_path, monkeypatch, {"backends": ["tensorboard", "mlflow"], "mlflow_uri": dead})
    assert summary["state"] == "done" and summary["finished"] == 3 and summary["failed"] == 0
    types = [e["type"] for e in events]
    warnings = [e["message"] for e in events if e["type"] == "tracking_warning"]
    assert sorted(w.split(" for ")[1].split(":")[0] for w in warnings[:-1]) == ["t0000", "t0001", "t0002"]
    assert all(w.startswith("tracking: mlflow failed") for w in warnings[:-1])
    assert warnings[-1].startswith("tracking: mlflow could not close the session run")
    assert types[-1] == "session_done" and max(i for i, t in enumerate(types) if t == "tracking_warning") < len(types) - 1
    for tid in ("t0000", "t0001", "t0002"):  # TensorBoard was up: every trial is there
        acc = EventAccumulator(str(tmp_path / "runs" / "tensorboard" / session_dir.name / tid))
        acc.Reload()
        assert [e.step for e in acc.Scalars("train/reward_mean")] == [1, 2]


@pytest.mark.slow
def test_a_session_logs_each_trial_to_mlflow_with_its_planner_tags(tmp_path, monkeypatch, mlflow_server):
    from mlflow.tracking import MlflowClient

    from tools.leaderboard import leaderboard

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # the environment names the server
    session_dir, events, summary = _tracked_session(tmp_path, monkeypatch, {"backends": ["mlflow"]})
    assert summary["finished"] == 3 and not [e for e in events if e["type"] == "tracking_warning"]
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(f"openrl-agent/{session_dir.name}")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {session_dir.name, "t0000", "t0001", "t0002"}
    assert runs[session_dir.name].info.status == "FINISHED"  # the session's run ends with the session
    rows = {r["trial_id"]: r for r in leaderboard(session_dir)}
    assert rows["t0002"]["parent"] == "t0000"  # round 2 builds on the best of round 1
    for tid, row in rows.items():
        tags = runs[tid].data.tags
        assert tags["mlflow.parentRunId"] == runs[session_dir.name].info.run_id
        assert (tags["planner"], tags["rationale"], tags["status"]) == ("offline", row["rationale"], "succeeded")
        assert tags.get("parent") == row["parent"] and tags["action"] == row["action"]
        assert runs[tid].data.metrics["result/dev_accuracy_after"] == pytest.approx(row["dev_accuracy_after"])
    assert not (tmp_path / "runs" / "tensorboard").exists()  # only the backends asked for
