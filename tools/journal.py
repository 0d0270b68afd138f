"""A session's Optuna study on disk: the journal file is the ground truth of its trials."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

from rl_core.sessiondir import JOURNAL_FILE, journal_file

__all__ = ["JOURNAL_FILE", "STUDY_NAME", "open_study"]
STUDY_NAME = "research"


def open_study(session_dir: Path, sampler: optuna.samplers.BaseSampler | None = None,
               pruner: optuna.pruners.BasePruner | None = None, direction: str = "maximize") -> optuna.Study:
    """The session's Optuna study, created on first use; the journal file survives `kill -9`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "using an existing study" on every open
    Path(session_dir).mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(journal_file(session_dir))))
    try:  # load first: create_study(load_if_exists=True) appends a CREATE_STUDY op on every open
        return optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        return optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner,
                                   direction=direction)
