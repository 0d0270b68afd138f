import json
from pathlib import Path

from tools.trials import curve_summary, error_signature, eval_points, last_jsonl, read_jsonl, sample_summary


def _write(path: Path, rows: list[dict], torn: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + torn)


def test_torn_last_line_is_skipped(tmp_path: Path):
    _write(tmp_path / "metrics.jsonl", [{"step": 1}, {"step": 2}], torn='{"step": 3, "rew')
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    assert last_jsonl(tmp_path / "metrics.jsonl") == {"step": 2}
    assert read_jsonl(tmp_path / "missing.jsonl") == [] and last_jsonl(tmp_path / "missing.jsonl") is None


def test_curve_summary_reads_start_end_and_extremes(tmp_path: Path):
    rows = [{"step": i, "reward_mean": 0.1 * i, "batch_accuracy": 0.5, "kl": 0.01 * i, "grad_norm": 1.0,
             "loss": 0.2, "reward/executes": 0.9} for i in range(1, 7)]
    rows[3]["grad_norm"] = 50.0
    _write(tmp_path / "metrics.jsonl", rows)
    s = curve_summary(tmp_path)
    assert s["steps"] == 6
    assert abs(s["reward_first"] - 0.2) < 1e-9 and abs(s["reward_last"] - 0.5) < 1e-9
    assert abs(s["reward_delta"] - 0.3) < 1e-9 and s["batch_accuracy_delta"] == 0.0
    assert s["kl_max"] == 0.06 and s["grad_norm_max"] == 50.0 and s["grad_norm_median"] == 1.0
    assert s["components_last"] == {"executes": 0.9} and s["nonfinite_loss"] is False
    _write(tmp_path / "metrics.jsonl", rows + [{"step": 7, "loss": float("nan"), "reward_mean": 0.1}])
    assert curve_summary(tmp_path)["nonfinite_loss"] is True


def test_samples_give_status_shares_and_varied_failures(tmp_path: Path):
    rows = [{"step": 1, "question": f"q{i}", "sql": "SELEC", "status": "syntax_error", "correct": False}
            for i in range(6)]
    rows += [{"step": 2, "question": "ok", "sql": "SELECT 1", "status": "ok", "correct": True},
             {"step": 2, "question": "wrong", "sql": "SELECT 2", "status": "ok", "correct": False}]
    _write(tmp_path / "samples.jsonl", rows)
    s = sample_summary(tmp_path, failures=5)
    assert s["n"] == 8 and s["status_share"]["syntax_error"] == 0.75 and s["correct_share"] == 0.125
    statuses = [f["status"] for f in s["failures"]]
    assert statuses.count("syntax_error") == 2 and "ok" in statuses  # at most two per kind


def test_eval_points_and_error_signature(tmp_path: Path):
    _write(tmp_path / "eval.jsonl", [{"step": 0, "accuracy": 0.4}, {"step": 10, "accuracy": 0.5}, {"bad": 1}])
    assert eval_points(tmp_path) == [(0, 0.4), (10, 0.5)]
    a = error_signature({"kind": "nan_loss", "message": "loss became NaN at step 12\ntrace"})
    b = error_signature({"kind": "nan_loss", "message": "loss became NaN at step 47"})
    assert a == b == "nan_loss: loss became NaN at step ##"
    assert error_signature({"kind": "oom", "message": "x"}) != a
