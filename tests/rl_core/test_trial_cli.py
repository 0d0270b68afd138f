"""`openrl-agent trial run`: the Typer group in agent/cli/trial.py (mounted by agent/cli/__init__.py)."""

import json

from typer.testing import CliRunner

from agent.cli.trial import app
from rl_core.trialdir import result_metrics


def test_bad_spec_is_one_red_line_and_exit_1(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"hparams": {"loss_type": "ppo"}}))
    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "loss_type must be one of" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing started


def test_missing_spec_file_says_so(tmp_path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nope.json")])
    assert result.exit_code == 1 and "cannot read spec" in result.output


def test_failed_trial_reports_its_error_kind(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"trial_id": "m", "model": str(tmp_path / "missing-model")}))
    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "model_load" in result.output
    assert json.loads((tmp_path / "out" / "result.json").read_text())["error"]["kind"] == "model_load"


def test_track_refuses_an_unknown_tracker_before_training(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"trial_id": "m"}))
    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "out"), "--track", "wandb"])
    assert result.exit_code == 1 and "tracking backend 'wandb' is unknown; use tensorboard, mlflow" in result.output
    assert not (tmp_path / "out").exists()


def test_track_mirrors_even_a_failed_trial_and_a_dead_tracker_is_a_line(tmp_path, monkeypatch):
    import socket

    import pytest

    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tracking]'")
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[tracking]'")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{s.getsockname()[1]}")  # nothing listens
    monkeypatch.setenv("OPENRL_AGENT_RUNS", str(tmp_path / "runs"))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"trial_id": "m", "model": str(tmp_path / "missing-model")}))
    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "out"), "--track", "tensorboard,mlflow"])
    assert result.exit_code == 1 and "model_load" in result.output  # the trial's own error stays the verdict
    assert "tracking: mlflow failed for out" in result.output
    assert list((tmp_path / "runs" / "tensorboard" / "single-trials" / "out").glob("events.out.tfevents.*"))


def test_closing_lines_name_the_splits_evaluated(tmp_path):
    """The closing line names the split it scored (it said "dev" for a test-split trial), and a
    report split gets its own line with the paired change."""
    from tests.rl_core.test_trial import micro_spec

    data = micro_spec(max_steps=1)
    data["eval"].update({"split": "test", "limit": 4, "report_split": "dev", "samples": 0})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    m = result_metrics(json.loads((tmp_path / "out" / "result.json").read_text()))
    e, r = m.eval, m.report
    assert e.split == "test" and r.split == "dev"  # named by split: a test-split trial's figures never say dev
    assert f"succeeded: test accuracy {e.accuracy_before:.3f} -> {e.accuracy_after:.3f}" in result.output
    assert "dev accuracy" not in result.output
    gain = f"{100 * r.gain:+.1f} ± {100 * r.gain_stderr_paired:.1f} points paired"
    assert (f"report on dev: {r.accuracy_before:.3f} -> {r.accuracy_after:.3f} "
            f"(±{r.stderr_after:.3f}, n={r.n}), {gain}") in result.output
