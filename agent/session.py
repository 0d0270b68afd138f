"""The session directory: everything durable about one research session lives under it.

    runs/<session-id>/
      session.json        the plan (goal, objective, constraints, search space, planner, launcher)
                          plus a small status block (state, stop reason, updated_at)
      rounds.json         one record per planning round: planner used, fallbacks, proposals, notes
      study.journal       the Optuna study (JournalFileBackend): the ground truth of trials
      checkpoints.sqlite  LangGraph SqliteSaver checkpoints of the research loop
      trials/<trial_id>/  one directory per trial (docs/contracts.md)
      pause               flag file; the running loop stops launching and pauses when it appears

Every JSON file is written through a temp file + os.replace, so a reader (or a `kill -9`) never
sees half a file. The study journal is append-only and Optuna replays it on open.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rl_core.trialdir import write_json_atomic
from tools.journal import JOURNAL_FILE, STUDY_NAME, open_study

__all__ = ["JOURNAL_FILE", "STUDY_NAME", "open_study", "write_json_atomic"]
SESSION_FILE = "session.json"
ROUNDS_FILE = "rounds.json"
CHECKPOINTS_FILE = "checkpoints.sqlite"
PAUSE_FILE = "pause"


class SessionError(ValueError):
    """A session that does not exist or cannot be read; the message says what to do."""


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def new_session_id(runs_dir: Path) -> str:
    """`s-YYYYMMDD-HHMMSS`, with a suffix when two sessions start in the same second."""
    base = time.strftime("s-%Y%m%d-%H%M%S", time.gmtime())
    candidate, n = base, 1
    while (runs_dir / candidate).exists():
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def session_file(session_dir: Path) -> Path:
    return Path(session_dir) / SESSION_FILE


def load_session(session_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """session.json of a session, with its directory added as `dir`."""
    session_dir = Path(session_dir)
    data = read_json(session_file(session_dir))
    if data is None:
        raise SessionError(f"{session_dir} is not a session (no {SESSION_FILE}); "
                           "see `openrl-agent list` for the sessions under runs/")
    data["dir"] = str(session_dir)
    return data


def save_session(session_dir: Path, data: dict[str, Any]) -> None:
    data = {k: v for k, v in data.items() if k != "dir"}
    write_json_atomic(session_file(session_dir), data)


def update_status(session_dir: Path, **status: Any) -> dict[str, Any]:
    """Merge keys into session.json's `status` block (state, stop_reason, ...)."""
    data = load_session(session_dir)
    data.setdefault("status", {}).update(status, updated_at=time.time())
    save_session(session_dir, data)
    return data


def list_sessions(runs_dir: str | os.PathLike[str] = "runs") -> list[dict[str, Any]]:
    """All sessions under runs_dir, oldest first (ids sort by creation time)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    for child in sorted(runs_dir.iterdir()):
        if session_file(child).is_file():
            try:
                out.append(load_session(child))
            except (SessionError, json.JSONDecodeError):
                continue
    out.sort(key=lambda s: (s.get("created_at", 0), s.get("id", "")))
    return out


def latest_session(runs_dir: str | os.PathLike[str] = "runs") -> Path:
    sessions = list_sessions(runs_dir)
    if not sessions:
        raise SessionError(f"no sessions under {runs_dir}; start one with `openrl-agent start \"<goal>\"`")
    return Path(sessions[-1]["dir"])


# --- pause flag -------------------------------------------------------------------------------

def request_pause(session_dir: str | os.PathLike[str]) -> Path:
    """Ask the loop running this session to pause: it launches nothing new and stops soon."""
    session_dir = Path(session_dir)
    load_session(session_dir)  # a clear error for a wrong path
    flag = session_dir / PAUSE_FILE
    write_json_atomic(flag, {"requested_at": time.time(), "pid": os.getpid()})
    return flag


def pause_requested(session_dir: Path) -> bool:
    return (Path(session_dir) / PAUSE_FILE).exists()


def clear_pause(session_dir: Path) -> None:
    (Path(session_dir) / PAUSE_FILE).unlink(missing_ok=True)


# --- rounds -----------------------------------------------------------------------------------

def save_round(session_dir: Path, record: dict[str, Any]) -> None:
    """Store (or replace, when a crashed round is planned again) the record of one round."""
    path = Path(session_dir) / ROUNDS_FILE
    rounds = [r for r in read_json(path, []) if r.get("round") != record["round"]]
    rounds.append(record)
    rounds.sort(key=lambda r: r["round"])
    write_json_atomic(path, rounds)


def load_rounds(session_dir: Path) -> list[dict[str, Any]]:
    return read_json(Path(session_dir) / ROUNDS_FILE, [])


def trial_dir(session_dir: Path, trial_id: str) -> Path:
    return Path(session_dir) / "trials" / trial_id
