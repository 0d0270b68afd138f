"""The trial directory's result schema (typed, named by split, versioned) and the session layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rl_core import sessiondir
from rl_core.trialdir import (
    RESULT_FILE,
    SCHEMA_VERSION,
    ResultMetrics,
    SplitFigures,
    TrialDirError,
    make_result,
    read_result,
    result_metrics,
    write_result,
)

SCHEMA_2 = Path(__file__).resolve().parents[1] / "fixtures" / "result_schema2.json"


def _row(accuracy: float, n: int = 400) -> dict:
    return {"accuracy": accuracy, "stderr": round((accuracy * (1 - accuracy) / n) ** 0.5, 4), "n": n}


def test_a_schema_2_result_is_read_into_the_split_named_metrics(tmp_path):
    shutil.copy(SCHEMA_2, tmp_path / RESULT_FILE)
    result = read_result(tmp_path)
    m = result_metrics(result)
    assert m.eval == SplitFigures("dev", accuracy_after=0.61, stderr_after=0.0244, n=400, accuracy_before=0.47,
                                  stderr_before=0.025, gain=0.14, gain_stderr_paired=0.018)
    assert m.report == SplitFigures("test", accuracy_after=0.64, stderr_after=0.024, n=400, accuracy_before=0.455,
                                    stderr_before=0.0249, gain=0.185, gain_stderr_paired=0.021)
    assert (m.steps, m.wall_s, m.train_s, m.reward_mean_last) == (120, 455.2, 400.1, 0.8)
    assert (m.pass_k, m.pass_before, m.pass_after) == (8, 0.7, 0.81)
    assert m.objective("dev_accuracy_after") == 0.61 and m.objective("gain") == 0.14
    names = m.by_name()
    assert names["dev_accuracy_after"] == 0.61 and names["test_accuracy_after"] == 0.64
    assert names["test_gain_stderr_paired"] == 0.021 and names["dev_pass_at_8_after"] == 0.81
    # Its metrics as an older session stored them in its study (no version there): told apart by their keys.
    assert ResultMetrics.from_json(result["metrics"]) == m


def test_the_current_schema_round_trips_and_a_test_split_trial_never_says_dev(tmp_path):
    before, after = _row(0.455), _row(0.64)
    metrics = ResultMetrics(eval=SplitFigures.measured("test", before, after, 0.021), steps=3, wall_s=9.5,
                            train_s=4.0, reward_mean_last=0.5)
    write_result(tmp_path, make_result("t0001", "succeeded", metrics=metrics, spec={"trial_id": "t0001"}))
    text = (tmp_path / RESULT_FILE).read_text()
    assert "dev" not in text  # schema 2 wrote dev_accuracy_after for this test-split accuracy
    result = read_result(tmp_path)
    assert result["schema_version"] == SCHEMA_VERSION == 3
    assert result_metrics(result) == metrics == ResultMetrics.from_json(result["metrics"])
    assert metrics.eval.split == "test" and metrics.eval.gain == round(0.64 - 0.455, 4)
    assert set(metrics.by_name()) == {"test_accuracy_after", "test_stderr_after", "test_n", "test_accuracy_before",
                                      "test_stderr_before", "test_gain", "test_gain_stderr_paired", "steps",
                                      "wall_s", "train_s", "reward_mean_last"}


def test_a_failed_result_has_no_score_and_a_gain_is_derived_when_not_recorded():
    failed = make_result("t0002", "failed", metrics=ResultMetrics(wall_s=3.0), error={"kind": "oom", "message": "m"})
    m = result_metrics(failed)
    assert m.eval is None and m.wall_s == 3.0 and m.objective("dev_accuracy_after") is None
    assert result_metrics(None) == ResultMetrics()
    old = {"metrics": {"dev_accuracy_before": 0.5, "dev_accuracy_after": 0.625}}  # schema 1: no version, no gain
    assert result_metrics(old).objective("gain") == pytest.approx(0.125)
    assert result_metrics(old).objective("no_such_metric") is None


def test_a_newer_schema_is_refused_with_the_fix(tmp_path):
    (tmp_path / RESULT_FILE).write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "status": "succeeded",
                                                    "metrics": {}}))
    with pytest.raises(TrialDirError, match="upgrade openrl-agent"):
        read_result(tmp_path)


def test_the_session_layout_has_one_owner(tmp_path):
    s = sessiondir.session_dir_of(tmp_path, "s-1")
    assert s == tmp_path / "s-1"
    assert sessiondir.trial_dir(s, "t0001") == s / "trials" / "t0001"
    assert sessiondir.confirm_job_dir(s, "base") == s / "confirm" / "trials" / "base"
    # the confirmation's launcher runs its jobs as the session CONFIRM_DIR under the session directory
    assert sessiondir.confirm_job_dir(s, "base") == sessiondir.trial_dir(
        sessiondir.session_dir_of(s, sessiondir.CONFIRM_DIR), "base")
    assert sessiondir.single_trial_dir("t9") == Path("runs") / "trials" / "t9"
    assert sessiondir.trial_posix_path("/runs/", "s-1", "t0001") == "/runs/s-1/trials/t0001"
    assert sessiondir.trial_ids(s) == []
    for tid in ("t0002", "t0001"):
        sessiondir.trial_dir(s, tid).mkdir(parents=True)
    (sessiondir.trials_dir(s) / "stray-file").write_text("")
    assert sessiondir.trial_ids(s) == ["t0001", "t0002"]
    assert not sessiondir.is_session(s)
    sessiondir.session_file(s).write_text("{}")
    assert sessiondir.is_session(s)


def test_metrics_without_a_version_are_read_by_their_keys():
    """The loop hands the budget the metrics its study stored ({"metrics": ...}, no schema_version):
    current-schema metrics must not be taken for schema 1 (whose reader finds no eval figures)."""
    current = ResultMetrics(eval=SplitFigures("dev", accuracy_after=0.6, n=10), wall_s=30.0, train_s=20.0)
    assert result_metrics({"metrics": current.to_json()}) == current
    old = {"dev_accuracy_after": 0.6, "dev_n": 10, "wall_s": 30.0, "train_s": 20.0}
    assert result_metrics({"metrics": old}) == current


def test_no_module_builds_session_or_trial_paths_by_hand():
    """Every path under runs/ comes from rl_core/sessiondir.py and every trial file name from
    rl_core/trialdir.py: a literal like `/ "trials"` or `/ "result.json"` elsewhere is a second owner."""
    import re

    root = Path(__file__).resolve().parents[2]
    names = ("trials", "study.journal", "confirm", "confirm.json", "session.json", "session.prev.json", "clock.json",
             "rounds.json", "checkpoints.sqlite", "pause", ".lock", "result.json", "eval.jsonl", "report.jsonl",
             "metrics.jsonl", "spec.json", "launch_spec.json", "samples.jsonl", "trial.log", "adapter", "cancelled",
             "checkpoints")
    alternatives = "|".join(map(re.escape, names))
    by_hand = re.compile(r"""/ ["'](""" + alternatives + r""")["']|/trials/\{""")
    owners = {root / "rl_core" / "sessiondir.py", root / "rl_core" / "trialdir.py"}
    offenders = [f"{p.relative_to(root)}:{i}" for package in ("agent", "cluster", "tools", "rl_core", "benchmarks")
                 for p in sorted((root / package).rglob("*.py")) if p not in owners
                 for i, line in enumerate(p.read_text().splitlines(), 1) if by_hand.search(line)]
    assert offenders == [], f"build these paths with rl_core.sessiondir / rl_core.trialdir: {offenders}"


def test_no_module_reads_result_metrics_by_string():
    """result.json's metrics are read through ResultMetrics (result_metrics): indexing the metrics dict
    by key is how `dev_accuracy_after` came to hold test-split figures in nine places."""
    import re

    root = Path(__file__).resolve().parents[2]
    by_key = re.compile(r"""\[["']metrics["']\]\s*(\.get\(|\[)|\.get\(["']metrics["']\)( or \{\})?\)?\s*(\.get\(|\[)""")
    owners = {root / "rl_core" / "trialdir.py"}
    offenders = [f"{p.relative_to(root)}:{i}" for package in ("agent", "cluster", "tools", "rl_core", "benchmarks")
                 for p in sorted((root / package).rglob("*.py")) if p not in owners
                 for i, line in enumerate(p.read_text().splitlines(), 1) if by_key.search(line)]
    assert offenders == [], f"read result metrics with rl_core.trialdir.result_metrics: {offenders}"
