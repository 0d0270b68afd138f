"""The leaderboard of a session: one row per trial, from the study journal and the trial directories.

Row keys: rank (succeeded trials by score, best first; None for others), trial_id, number,
status (succeeded | failed | pruned | running | queued | interrupted), score (the objective),
dev_accuracy_before/after, gain, gain_stderr, params, key_params, reward (component weights),
reward_summary, steps, wall_s, rationale, round, planner, error ({kind, message} or None),
adapter_path, action (fresh | continue | branch), parent, steps_total, train_s_total (with the
parent's training).

The figures come from the result's typed metrics (rl_core.trialdir.ResultMetrics, any schema): a
session scores its trials on dev, so the row calls the eval split's figures `dev_*`.

`gain` is the change over the policy the trial started from (its parent's final weights for a
child) and `gain_stderr` its paired standard error: both evaluations ran on the same dev
questions, so it is sd(per-question difference)/sqrt(n) (rl_core.stats). Results written before
per-question outcomes were kept fall back to the conservative independent estimate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from rl_core.sessiondir import journal_file, screens_file, trial_dir
from rl_core.stats import binomial_se
from rl_core.trialdir import (
    ResultMetrics,
    SplitFigures,
    TrialDirError,
    launch_spec,
    read_json_object,
    read_result,
    result_metrics,
    was_cancelled,
)
from tools.journal import open_study

KEY_PARAMS = ("learning_rate", "lora_rank", "kl_beta", "group_size", "prompts_per_step", "temperature",
              "loss_type", "max_steps")
_STATUS = {TrialState.COMPLETE: "succeeded", TrialState.FAIL: "failed", TrialState.PRUNED: "pruned",
           TrialState.RUNNING: "running", TrialState.WAITING: "queued"}


def leaderboard(session_dir: str | Path) -> list[dict[str, Any]]:
    """Every trial of a session as a row, ranked ones first (best score first)."""
    session_dir = Path(session_dir)
    if not journal_file(session_dir).exists():
        return []
    return trial_rows(session_dir)


def trial_rows(session_dir: Path, study: Any = None) -> list[dict[str, Any]]:
    study = study or open_study(session_dir)
    screens = load_screens(session_dir)
    rows = [{**_row(session_dir, t), "screen": screens.get(_tid(t))} for t in study.get_trials(deepcopy=False)]
    ranked = sorted((r for r in rows if r["status"] == "succeeded" and r["score"] is not None),
                    key=lambda r: -r["score"])
    for i, row in enumerate(ranked, 1):
        row["rank"] = i
    order = {"running": 0, "interrupted": 1, "queued": 2, "pruned": 3, "failed": 4}
    rest = sorted((r for r in rows if r["rank"] is None), key=lambda r: (order.get(r["status"], 5), r["number"]))
    return ranked + rest


def load_screens(session_dir: Path) -> dict[str, dict[str, Any]]:
    """Each challenger's race against its incumbent (agent/screen.py writes them), by trial id; a
    damaged file reads as none recorded."""
    try:
        data = read_json_object(screens_file(session_dir)) or {}
    except TrialDirError:
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def _tid(trial: Any) -> str:
    return trial.user_attrs.get("trial_id") or f"t{trial.number:04d}"


def _row(session_dir: Path, trial: Any) -> dict[str, Any]:
    attrs = trial.user_attrs
    tid = _tid(trial)
    tdir = trial_dir(session_dir, tid)
    result = _read_result(tdir) or {}
    spec = result.get("spec") or _launch_spec(tdir)
    # what the loop told the study (the current schema; an older session's, read by its keys)
    metrics = ResultMetrics.from_json(attrs["metrics"]) if attrs.get("metrics") else result_metrics(result)
    figures = metrics.eval or SplitFigures("dev")
    status = _STATUS.get(trial.state, trial.state.name.lower())
    if status == "running" and was_cancelled(tdir):
        status = "interrupted"  # stopped by a pause; re-runs on resume
    reward = ((spec.get("reward") or {}).get("components")) or _reward_from_params(trial.params)
    lineage = result.get("lineage") or {}
    error = attrs.get("error") or (result.get("error") if result.get("status") == "failed" else None)
    return {
        "rank": None, "trial_id": tid, "number": trial.number, "status": status,
        "score": trial.value if trial.state == TrialState.COMPLETE else None,
        "dev_accuracy_before": figures.accuracy_before, "dev_accuracy_after": figures.accuracy_after,
        "gain": figures.gain_or_difference(), "gain_stderr": _gain_stderr(figures),
        "params": dict(trial.params),
        "key_params": {k: trial.params[k] for k in KEY_PARAMS if k in trial.params},
        "reward": reward, "reward_summary": reward_summary(reward),
        "steps": metrics.steps, "wall_s": metrics.wall_s,
        "rationale": attrs.get("rationale", ""), "round": attrs.get("round"), "planner": attrs.get("planner"),
        "error": {k: error.get(k) for k in ("kind", "message")} if isinstance(error, dict) else None,
        "adapter_path": str(tdir / result["adapter_path"]) if result.get("adapter_path") else None,
        "pruned_at_step": attrs.get("pruned_at_step"),
        "action": attrs.get("action", "fresh"), "parent": attrs.get("parent"),
        "screened": bool(attrs.get("screened")), "sft_steps": attrs.get("sft_steps"),
        "steps_total": lineage.get("steps_total", metrics.steps),
        "train_s_total": lineage.get("train_s_total", metrics.train_s),
    }


def reward_summary(components: dict[str, float]) -> str:
    """`execution_match 1 + executes 0.1`: the reward spec in one short line."""
    return " + ".join(f"{name} {weight:g}" for name, weight in components.items()) or "-"


def _reward_from_params(params: dict[str, Any]) -> dict[str, float]:
    out = {"execution_match": 1.0}
    out.update({k[len("reward_"):]: v for k, v in params.items() if k.startswith("reward_") and v})
    return out


def _gain_stderr(m: SplitFigures) -> float | None:
    """The paired standard error of after - before (same questions) when the trial recorded it;
    for older results, the conservative independent one."""
    if m.gain_stderr_paired is not None:
        return m.gain_stderr_paired
    se_after = m.stderr_after or binomial_se(m.accuracy_after, m.n)
    se_before = m.stderr_before or binomial_se(m.accuracy_before, m.n)
    if se_after is None or se_before is None:
        return None
    return math.sqrt(se_after**2 + se_before**2)


def _read_result(tdir: Path) -> dict[str, Any] | None:
    try:
        return read_result(tdir)
    except TrialDirError as exc:  # shown as the trial's error, never a crash of the leaderboard
        return {"status": "failed", "error": {"kind": "corrupt", "message": str(exc)}, "metrics": {}}


def _launch_spec(tdir: Path) -> dict[str, Any]:
    try:
        return launch_spec(tdir)
    except TrialDirError:
        return {}
