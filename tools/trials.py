"""Reading a trial directory (docs/contracts.md): curve summaries from metrics.jsonl and eval.jsonl,
failure samples from samples.jsonl. The planners read these; so do the leaderboard and the report.

Files may be read while the trial still writes them: a torn last line is skipped, never an error.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from rl_core.trialdir import EVAL_FILE, METRICS_FILE, SAMPLES_FILE, last_jsonl, read_jsonl

__all__ = ["curve_series", "curve_summary", "error_signature", "eval_points", "last_jsonl", "read_jsonl",
           "sample_summary", "summarize_trial"]


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    out = []
    for row in rows:
        value = row.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append(float(value))
    return out


def _edge_mean(values: list[float], last: bool, width: int = 3) -> float | None:
    if not values:
        return None
    part = values[-width:] if last else values[:width]
    finite = [v for v in part if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def curve_series(trial_dir: Path) -> dict[str, list[float]]:
    """Per-step series for plots and sparklines: step, reward_mean, batch_accuracy, kl."""
    rows = read_jsonl(Path(trial_dir) / METRICS_FILE)
    return {key: _series(rows, key) for key in ("step", "reward_mean", "batch_accuracy", "kl", "elapsed_s")}


def curve_summary(trial_dir: Path) -> dict[str, Any]:
    """What the training curves did: start vs end of reward and batch accuracy, KL and grad-norm
    extremes, non-finite losses, and the last reward per component."""
    rows = read_jsonl(Path(trial_dir) / METRICS_FILE)
    if not rows:
        return {"steps": 0}
    reward, acc = _series(rows, "reward_mean"), _series(rows, "batch_accuracy")
    kl, grad = _series(rows, "kl"), _series(rows, "grad_norm")
    out: dict[str, Any] = {
        "steps": int(rows[-1].get("step", len(rows))),
        "reward_first": _edge_mean(reward, last=False), "reward_last": _edge_mean(reward, last=True),
        "batch_accuracy_first": _edge_mean(acc, last=False), "batch_accuracy_last": _edge_mean(acc, last=True),
        "kl_max": max(kl) if kl else None, "kl_last": kl[-1] if kl else None,
        "grad_norm_max": max(grad) if grad else None,
        "grad_norm_median": statistics.median(grad) if grad else None,
        "nonfinite_loss": any(not math.isfinite(v) for v in _series(rows, "loss") + reward),
        "completion_len_last": _edge_mean(_series(rows, "completion_len"), last=True),
        "elapsed_s": rows[-1].get("elapsed_s"),
        "components_last": {k[len("reward/"):]: v for k, v in rows[-1].items() if k.startswith("reward/")},
    }
    for key in ("reward", "batch_accuracy"):
        first, last = out[f"{key}_first"], out[f"{key}_last"]
        out[f"{key}_delta"] = None if first is None or last is None else last - first
    return out


def eval_points(trial_dir: Path) -> list[tuple[int, float]]:
    """(step, dev accuracy) for every evaluation written so far, in order."""
    rows = read_jsonl(Path(trial_dir) / EVAL_FILE)
    return [(int(r["step"]), float(r["accuracy"])) for r in rows
            if isinstance(r.get("step"), int) and isinstance(r.get("accuracy"), int | float)]


def sample_summary(trial_dir: Path, failures: int = 5, recent: int = 200) -> dict[str, Any]:
    """Share of each execution status among recent samples, and a few wrong completions with verdicts."""
    rows = read_jsonl(Path(trial_dir) / SAMPLES_FILE)[-recent:]
    if not rows:
        return {"n": 0, "status_share": {}, "correct_share": None, "failures": []}
    counts = Counter(str(r.get("status", "unknown")) for r in rows)
    wrong = [r for r in rows if not r.get("correct")]
    picked = []
    seen_status: Counter[str] = Counter()
    for r in reversed(wrong):  # newest first, at most two of each status so every kind shows
        status = str(r.get("status", "unknown"))
        if seen_status[status] >= 2:
            continue
        seen_status[status] += 1
        picked.append({k: r.get(k) for k in ("step", "question", "sql", "status", "error", "reward")})
        if len(picked) >= failures:
            break
    return {
        "n": len(rows),
        "status_share": {s: c / len(rows) for s, c in counts.most_common()},
        "correct_share": sum(1 for r in rows if r.get("correct")) / len(rows),
        "failures": picked,
    }


def summarize_trial(trial_dir: Path) -> dict[str, Any]:
    """Everything a planner reads about one trial, small enough to put in a prompt."""
    return {"curve": curve_summary(trial_dir), "evals": eval_points(trial_dir),
            "samples": sample_summary(trial_dir)}


def error_signature(error: dict[str, Any] | None) -> str:
    """A key under which identical failures group: kind + the message's first line, digits masked."""
    if not error:
        return "unknown: no error recorded"
    message = str(error.get("message", "")).strip().splitlines()
    first = message[0][:160] if message else ""
    masked = "".join("#" if ch.isdigit() else ch for ch in first)
    return f"{error.get('kind', 'crash')}: {masked}"
