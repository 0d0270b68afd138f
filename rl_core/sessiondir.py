"""The session directory's layout: the one owner of its file names and of where a trial's directory
lives (docs/contracts.md). Torch-free, so the agent, the launchers and the tools build every path
under `runs/` here instead of by hand; what goes *inside* a trial directory is `rl_core.trialdir`'s.

    <runs>/                  RUNS_DIR by default; sessions, plus the trackers' state beside them
      <session-id>/
        session.json         the plan plus a status block        (agent/session.py writes it)
        session.prev.json    the previous good copy of session.json
        rounds.json          one record per planning round
        study.journal        the Optuna study, the ground truth of trials   (tools/journal.py)
        checkpoints.sqlite   LangGraph checkpoints of the research loop
        clock.json           running seconds used, for the time budget      (agent/budget.py)
        screens.json         each challenger's race against its incumbent   (agent/screen.py)
        pause                flag file: the running loop pauses when it appears
        .lock                held (flock) by the one process running the session's loop
        trials/<trial_id>/   one trial directory per trial                 (rl_core/trialdir.py)
        confirm/             the test-split confirmation: a session directory of its own, so its
          trials/<job>/      jobs are trial directories a launcher runs like any other
        confirm.json         the confirmation's verdict
      trials/<trial_id>/     trials run on their own (`openrl-agent trial run` without --out)
      tensorboard/           TensorBoard event files          (tools/tracking.py)
      mlflow.db, mlartifacts/  the default MLflow store       (tools/tracking.py)

A launcher is given a runs directory and a trial spec naming its session; the trial's directory is
`trial_dir(session_dir_of(runs, session), trial_id)` wherever it runs (a pod sees the same layout on its volume).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

RUNS_DIR = "runs"
SESSION_FILE = "session.json"
BACKUP_FILE = "session.prev.json"
ROUNDS_FILE = "rounds.json"
JOURNAL_FILE = "study.journal"
CHECKPOINTS_FILE = "checkpoints.sqlite"
CLOCK_FILE = "clock.json"
SCREENS_FILE = "screens.json"  # each challenger's race against its incumbent (agent/screen.py)
PAUSE_FILE = "pause"
LOCK_FILE = ".lock"  # the flock that keeps one loop per session
TRIALS_DIR = "trials"
CONFIRM_DIR = "confirm"  # also the `session` its jobs' specs name: the launcher puts them under it
CONFIRM_FILE = "confirm.json"
# Trackers keep their state beside the sessions, in the runs directory, so one store spans them all.
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS_DIR = "mlartifacts"

PathLike = str | os.PathLike[str]


def session_dir_of(runs_dir: PathLike, session: str) -> Path:
    """`<runs>/<session-id>`."""
    return Path(runs_dir) / session


def trials_dir(session: PathLike) -> Path:
    return Path(session) / TRIALS_DIR


def trial_dir(session: PathLike, trial_id: str) -> Path:
    """`<session>/trials/<trial_id>`: where every launcher puts a trial and every reader finds it."""
    return Path(session) / TRIALS_DIR / trial_id


def single_trial_dir(trial_id: str, runs_dir: PathLike = RUNS_DIR) -> Path:
    """Where `openrl-agent trial run` and `python -m rl_core.trial` put a trial run outside a
    session when no --out is given: `runs/trials/<trial_id>`."""
    return trial_dir(runs_dir, trial_id)


def trial_posix_path(runs_root: str, session: str, trial_id: str) -> str:
    """The same trial directory as a POSIX path string, for a machine whose runs live elsewhere (a
    pod's mounted volume), built with the same names as `trial_dir`."""
    return str(PurePosixPath(runs_root) / session / TRIALS_DIR / trial_id)


def trial_ids(session: PathLike) -> list[str]:
    """The trials that have a directory, in id order ([] before the first launch)."""
    root = trials_dir(session)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def session_file(session: PathLike) -> Path:
    return Path(session) / SESSION_FILE


def backup_file(session: PathLike) -> Path:
    return Path(session) / BACKUP_FILE


def rounds_file(session: PathLike) -> Path:
    return Path(session) / ROUNDS_FILE


def journal_file(session: PathLike) -> Path:
    return Path(session) / JOURNAL_FILE


def checkpoints_file(session: PathLike) -> Path:
    return Path(session) / CHECKPOINTS_FILE


def clock_file(session: PathLike) -> Path:
    return Path(session) / CLOCK_FILE


def screens_file(session: PathLike) -> Path:
    return Path(session) / SCREENS_FILE


def pause_file(session: PathLike) -> Path:
    return Path(session) / PAUSE_FILE


def lock_file(session: PathLike) -> Path:
    return Path(session) / LOCK_FILE


def confirm_dir(session: PathLike) -> Path:
    """The confirmation's own session directory: a launcher given it as the runs directory of a
    spec whose session is CONFIRM_DIR puts a job at `confirm_job_dir`."""
    return Path(session) / CONFIRM_DIR


def confirm_job_dir(session: PathLike, job: str) -> Path:
    return trial_dir(confirm_dir(session), job)


def confirm_file(session: PathLike) -> Path:
    return Path(session) / CONFIRM_FILE


def is_session(path: PathLike) -> bool:
    return session_file(path).is_file()


def tensorboard_dir(runs_dir: PathLike) -> Path:
    return Path(runs_dir) / TENSORBOARD_DIR


def mlflow_db(runs_dir: PathLike) -> Path:
    return Path(runs_dir) / MLFLOW_DB


def mlflow_artifacts_dir(runs_dir: PathLike) -> Path:
    return Path(runs_dir) / MLFLOW_ARTIFACTS_DIR
