"""Optuna parameter importances, read from the session's study journal once enough trials finished.

Optuna's default evaluator, PED-ANOVA (fANOVA would need scikit-learn). With a handful of trials the
numbers are mostly noise, so below MIN_TRIALS, or when every trial scored the same, the report says
why it shows none instead of printing numbers that look meaningful.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from rl_core.sessiondir import journal_file

MIN_TRIALS = 4


def param_importances(session_dir: Path) -> dict[str, Any]:
    journal = journal_file(session_dir)
    if not journal.exists():
        return {"params": {}, "n_trials": 0, "note": "no Optuna study in this session"}
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    names = optuna.study.get_all_study_names(storage)
    if not names:
        return {"params": {}, "n_trials": 0, "note": "the Optuna study is empty"}
    study = optuna.load_study(study_name=names[0], storage=storage)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS:
        return {
            "params": {},
            "n_trials": len(complete),
            "note": f"needs at least {MIN_TRIALS} finished trials, have {len(complete)}",
        }
    varying = _varying_params(complete)
    if not varying:
        return {"params": {}, "n_trials": len(complete), "note": "no parameter varied across trials"}
    if len({t.value for t in complete}) == 1:
        return {"params": {}, "n_trials": len(complete),
                "note": "every finished trial scored the same, so no parameter explains a difference"}  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA warns on tiny studies; the note above covers it
            scores = optuna.importance.get_param_importances(
                study, params=varying, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
            )
    except (ValueError, RuntimeError) as exc:  # e.g. a parameter whose range changed mid-study
        return {"params": {}, "n_trials": len(complete), "note": f"Optuna could not compute them: {exc}"}
    return {
        "params": {k: round(float(v), 4) for k, v in scores.items()},
        "n_trials": len(complete),
        "note": "",
    }


def _varying_params(trials: list) -> list[str]:
    """Parameters present in every finished trial with more than one value (an importance needs both)."""
    common = set.intersection(*(set(t.params) for t in trials))
    return sorted(p for p in common if len({repr(t.params[p]) for t in trials}) > 1)
