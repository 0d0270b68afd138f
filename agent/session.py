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


BACKUP_FILE = "session.prev.json"


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
    """session.json of a session, with its directory added as `dir`. A damaged file (power loss,
    a full disk, an editor) is a SessionError that says how to recover, never a traceback."""
    session_dir = Path(session_dir)
    path = session_file(session_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SessionError(f"{session_dir} is not a session (no {SESSION_FILE}); "
                           "see `openrl-agent list` for the sessions under runs/") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionError(damaged_message(session_dir, exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get("constraints"), dict):
        raise SessionError(damaged_message(session_dir, ValueError("not a session object")))
    data["dir"] = str(session_dir)
    return data


def damaged_message(session_dir: Path, exc: Exception) -> str:
    backup = session_dir / BACKUP_FILE
    how = (f"restore the previous copy with `cp {backup} {session_file(session_dir)}` (finished trials live in "
           f"{session_dir / 'trials'} and {session_dir / 'study.journal'}, which are intact)"
           if backup.is_file() else
           f"its trials are still in {session_dir / 'trials'} and {session_dir / 'study.journal'}; "
           "start a new session to continue the research")
    return f"session {session_dir.name} is damaged: {SESSION_FILE} cannot be read ({exc}); {how}"


def save_session(session_dir: Path, data: dict[str, Any]) -> None:
    """Write session.json atomically, keeping the previous good copy as session.prev.json."""
    data = {k: v for k, v in data.items() if k != "dir"}
    path = session_file(session_dir)
    if path.is_file():
        try:
            _copy(path, Path(session_dir) / BACKUP_FILE)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass  # never back up a damaged file over a good backup
    write_json_atomic(path, data)


def _copy(src: Path, dst: Path) -> None:
    write_json_atomic(dst, json.loads(src.read_text()))  # parses first: a damaged file raises, not copies


def update_status(session_dir: Path, **status: Any) -> dict[str, Any]:
    """Merge keys into session.json's `status` block (state, stop_reason, ...)."""
    data = load_session(session_dir)
    data.setdefault("status", {}).update(status, updated_at=time.time())
    save_session(session_dir, data)
    return data


def list_sessions(runs_dir: str | os.PathLike[str] = "runs", *, damaged: bool = False) -> list[dict[str, Any]]:
    """All sessions under runs_dir, oldest first (ids sort by creation time). With damaged=True, a
    session whose session.json cannot be read is listed as {"id", "dir", "damaged": message}."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    for child in sorted(runs_dir.iterdir()):
        if not session_file(child).is_file():
            continue
        try:
            out.append(load_session(child))
        except SessionError as exc:
            if damaged:
                out.append({"id": child.name, "dir": str(child), "damaged": str(exc),
                            "created_at": child.stat().st_mtime})
    out.sort(key=lambda s: (s.get("created_at", 0), s.get("id", "")))
    return out


def latest_session(runs_dir: str | os.PathLike[str] = "runs") -> Path:
    """The newest session; if the newest is damaged, say so instead of silently picking an older one."""
    sessions = list_sessions(runs_dir, damaged=True)
    if not sessions:
        raise SessionError(f"no sessions under {runs_dir}; start one with `openrl-agent start \"<goal>\"`")
    newest = max(sessions, key=lambda s: s["id"])
    if newest.get("damaged"):
        raise SessionError(newest["damaged"] + "; or name another session (`openrl-agent list`)")
    return Path(newest["dir"])


def agent_alive(session: dict[str, Any]) -> bool:
    """Whether the agent process recorded in session.json's status still runs (same host)."""
    pid = (session.get("status") or {}).get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
