"""LocalLauncher with the real trial runner (`python -m rl_core.trial`) on the built-in micro Gemma."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from cluster.base import wait
from cluster.local import LocalLauncher
from rl_core import sessiondir
from rl_core.trialdir import result_metrics
from tests.cluster.test_conformance import wait_for

pytestmark = pytest.mark.slow


def real_spec(trial_id: str, **hparams) -> dict:
    return {"trial_id": trial_id, "session": "s-real", "model": "builtin:micro-gemma", "seed": 0,
            "hparams": {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 16, "ppo_epochs": 1,
                        "warmup_steps": 0, **hparams},
            "budget": {"max_steps": 2, "max_seconds": 60, "checkpoint_every": 0},
            "eval": {"limit": 4, "samples": 0, "before": False}}


def test_two_real_trials_run_in_parallel(tmp_path: Path) -> None:
    launcher = LocalLauncher(runs_dir=tmp_path, slots=2, threads_per_trial=1)
    handles = [launcher.submit(real_spec(f"r{i}", learning_rate=lr)) for i, lr in enumerate((1e-4, 3e-4))]
    assert [launcher.status(h) for h in handles] == ["running", "running"]
    statuses = wait(launcher, handles, timeout_s=300)
    assert statuses == {h: "succeeded" for h in handles}, [launcher.logs(h, 20) for h in handles]
    for h in handles:
        metrics = result_metrics(launcher.result(h))
        assert metrics.steps == 2 and metrics.eval.n == 4 and metrics.eval.split == "dev"
        trial_dir = sessiondir.trial_dir(tmp_path / "s-real", h.trial_id)
        assert len((trial_dir / "metrics.jsonl").read_text().splitlines()) == 2
        assert "step 2/2" in (trial_dir / "trial.log").read_text()


def test_a_spec_the_runner_rejects_is_failed_bad_spec(tmp_path: Path) -> None:
    launcher = LocalLauncher(runs_dir=tmp_path, slots=1, threads_per_trial=1)
    handle = launcher.submit(real_spec("bad", group_size=1))
    assert wait(launcher, [handle], timeout_s=120)[handle] == "failed"
    error = launcher.result(handle)["error"]
    assert error["kind"] == "bad_spec" and "at least 2 completions" in error["message"]


def test_a_real_trial_killed_by_sigkill_is_failed_with_its_log_tail(tmp_path: Path) -> None:
    launcher = LocalLauncher(runs_dir=tmp_path, slots=1, threads_per_trial=1)
    handle = launcher.submit(real_spec("killed"))
    state = json.loads((Path(handle.ref) / "launcher.json").read_text())
    wait_for(lambda: (Path(handle.ref) / "trial.log").stat().st_size > 0, timeout_s=120, what="trial output")
    os.kill(state["pid"], signal.SIGKILL)  # what the kernel's OOM killer does
    assert wait(launcher, [handle], timeout_s=60)[handle] == "failed"
    error = launcher.result(handle)["error"]
    assert error["kind"] == "oom" and "SIGKILL" in error["message"] and error["log_tail"]


def test_cancelling_a_real_trial_leaves_no_result(tmp_path: Path) -> None:
    launcher = LocalLauncher(runs_dir=tmp_path, slots=1, threads_per_trial=1)
    handle = launcher.submit(real_spec("cancelled"))
    wait_for(lambda: (Path(handle.ref) / "trial.log").stat().st_size > 0, timeout_s=120, what="trial output")
    launcher.cancel(handle)
    assert launcher.status(handle) == "cancelled" and launcher.result(handle) is None
    assert not (Path(handle.ref) / "result.json").exists()
