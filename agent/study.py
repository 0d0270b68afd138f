"""The Optuna study as the ground truth of a session's trials.

A trial's life in the study: a planner proposal is enqueued (WAITING, with its rationale, round and
planner as user attributes), `ask()`ed (RUNNING: its number names it, `t0007`; Optuna fills the
params the proposal left open), launched, and finally told exactly once: its score (COMPLETE), FAIL
or PRUNED. Because the journal is replayed on open, a restarted agent finds every trial where it
stood: RUNNING trials are re-attached, collected or re-launched; finished ones are never told twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from agent.plan import Plan
from agent.session import open_study
from rl_core.trialdir import result_metrics
from tools.trials import error_signature

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def session_study(session_dir: Path, plan: Plan) -> optuna.Study:
    """Open the study with the sampler and pruner the plan asks for."""
    constraints = plan.constraints
    probe = open_study(session_dir)
    # A fresh seed per restart: replaying the same seed would re-propose configs already run.
    seed = constraints.seed * 1000 + len(probe.get_trials(deepcopy=False))
    startup = max(2, min(10, constraints.trials // 3))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    if plan.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return open_study(session_dir, sampler=sampler, pruner=pruner)


def trial_id_of(trial: FrozenTrial) -> str:
    return str(trial.user_attrs.get("trial_id") or f"t{trial.number:04d}")


def by_state(study: optuna.Study, *states: TrialState) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=states)


def find(study: optuna.Study, number: int) -> FrozenTrial | None:
    for trial in study.get_trials(deepcopy=False):
        if trial.number == number:
            return trial
    return None


def counts(study: optuna.Study) -> dict[str, int]:
    out = {"finished": 0, "running": 0, "waiting": 0}
    for trial in study.get_trials(deepcopy=False):
        if trial.state in FINISHED:
            out["finished"] += 1
        elif trial.state == TrialState.RUNNING:
            out["running"] += 1
        elif trial.state == TrialState.WAITING:
            out["waiting"] += 1
    return out


def best_value(study: optuna.Study) -> float | None:
    values = [t.value for t in by_state(study, TrialState.COMPLETE) if t.value is not None]
    return max(values) if values else None


def ask(study: optuna.Study, distributions: dict[str, Any]) -> FrozenTrial:
    """Pop the oldest enqueued proposal (or sample a fresh one) and name it."""
    trial = study.ask(fixed_distributions=distributions)
    trial.set_user_attr("trial_id", f"t{trial.number:04d}")
    return find(study, trial.number)  # type: ignore[return-value]


def score_of(result: dict[str, Any], metric: str) -> float | None:
    return result_metrics(result).objective(metric)


def tell_result(study: optuna.Study, number: int, result: dict[str, Any], metric: str) -> str | None:
    """Tell the study a finished trial's outcome, once. Returns the status told, or None when the
    trial had already been told (a restarted agent collecting it again)."""
    frozen = find(study, number)
    if frozen is None or frozen.state != TrialState.RUNNING:
        return None
    trial = optuna.trial.Trial(study, frozen._trial_id)
    score = score_of(result, metric) if result.get("status") == "succeeded" else None
    error = result.get("error")
    if result.get("status") == "succeeded" and score is None:
        error = {"kind": "crash", "message": f"result.json has no metrics.{metric}; cannot score the trial"}
    trial.set_user_attr("metrics", result_metrics(result).to_json())  # the current schema, whatever was read
    if score is None:
        error = error or {"kind": "crash", "message": "the trial failed without an error record"}
        trial.set_user_attr("error", {k: error.get(k) for k in ("kind", "message")})
        trial.set_user_attr("error_signature", error_signature(error))
        study.tell(number, state=TrialState.FAIL)
        return "failed"
    study.tell(number, score)
    return "succeeded"


def set_attr(study: optuna.Study, number: int, key: str, value: Any) -> None:
    """A user attribute on a trial still running (a finished one takes none)."""
    frozen = find(study, number)
    if frozen is not None and frozen.state == TrialState.RUNNING:
        optuna.trial.Trial(study, frozen._trial_id).set_user_attr(key, value)


def tell_pruned(study: optuna.Study, number: int, step: int) -> bool:
    frozen = find(study, number)
    if frozen is None or frozen.state != TrialState.RUNNING:
        return False
    optuna.trial.Trial(study, frozen._trial_id).set_user_attr("pruned_at_step", step)
    study.tell(number, state=TrialState.PRUNED)
    return True


def report_eval(study: optuna.Study, number: int, step: int, accuracy: float) -> bool:
    """Report one intermediate dev accuracy; True when the pruner says stop this trial."""
    frozen = find(study, number)
    if frozen is None or frozen.state != TrialState.RUNNING:
        return False
    trial = optuna.trial.Trial(study, frozen._trial_id)
    if step not in frozen.intermediate_values:
        trial.report(accuracy, step)
    return trial.should_prune()


def repeated_failures(study: optuna.Study, at_least: int = 2) -> dict[str, dict[str, Any]]:
    """Failures that share a cause (same kind and message), with the trials that hit it."""
    groups: dict[str, dict[str, Any]] = {}
    for trial in by_state(study, TrialState.FAIL):
        sig = trial.user_attrs.get("error_signature")
        if not sig:
            continue
        group = groups.setdefault(sig, {"count": 0, "trial_ids": [],
                                        "error": trial.user_attrs.get("error")})
        group["count"] += 1
        group["trial_ids"].append(trial_id_of(trial))
    return {sig: g for sig, g in groups.items() if g["count"] >= at_least}
