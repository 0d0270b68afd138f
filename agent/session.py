"""A session's own files: session.json (the plan plus a small status block: state, stop reason,
updated_at) and its backup, rounds.json (one record per planning round: planner used, fallbacks,
proposals, notes) and the pause flag (the running loop stops launching and pauses when it appears).
Where each file lives is rl_core/sessiondir.py's (the layout's one owner).

Every JSON file is written through a temp file + os.replace, so a reader (or a `kill -9`) never
sees half a file. The study journal is append-only and Optuna replays it on open.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from rl_core.sessiondir import (
    BACKUP_FILE,
    CHECKPOINTS_FILE,
    JOURNAL_FILE,
    PAUSE_FILE,
    ROUNDS_FILE,
    SESSION_FILE,
    backup_file,
    journal_file,
    pause_file,
    rounds_file,
    session_file,
    trial_dir,
    trials_dir,
)
from rl_core.trialdir import write_json_atomic
from tools.journal import STUDY_NAME, open_study

__all__ = ["BACKUP_FILE", "CHECKPOINTS_FILE", "JOURNAL_FILE", "PAUSE_FILE", "ROUNDS_FILE", "SESSION_FILE",
           "STUDY_NAME", "open_study", "session_file", "trial_dir", "write_json_atomic"]


class SessionError(ValueError):
    """A session that does not exist or cannot be read; the message says what to do."""


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default



def new_session_id(runs_dir: Path) -> str:
    """`s-YYYYMMDD-HHMMSS-xxxx`: the start time and a random part, so that two machines starting a
    session in the same second (one Kubernetes namespace, one tracking server) never share an id; the
    Kubernetes launcher adopts an existing object only when it carries this session's id."""
    while True:
        candidate = f"{time.strftime('s-%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
        if not (runs_dir / candidate).exists():
            return candidate


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
    backup = backup_file(session_dir)
    how = (f"restore the previous copy with `cp {backup} {session_file(session_dir)}` (finished trials live in "
           f"{trials_dir(session_dir)} and {journal_file(session_dir)}, which are intact)"
           if backup.is_file() else
           f"its trials are still in {trials_dir(session_dir)} and {journal_file(session_dir)}; "
           "start a new session to continue the research")
    return f"session {session_dir.name} is damaged: {SESSION_FILE} cannot be read ({exc}); {how}"


def save_session(session_dir: Path, data: dict[str, Any]) -> None:
    """Write session.json atomically, keeping the previous good copy as session.prev.json."""
    data = {k: v for k, v in data.items() if k != "dir"}
    path = session_file(session_dir)
    if path.is_file():
        try:
            _copy(path, backup_file(session_dir))
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
    newest = max(sessions, key=lambda s: (s["id"][:17], s.get("created_at", 0)))  # the time, then creation
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
    flag = pause_file(session_dir)
    write_json_atomic(flag, {"requested_at": time.time(), "pid": os.getpid()})
    return flag


def pause_requested(session_dir: Path) -> bool:
    return pause_file(session_dir).exists()


def clear_pause(session_dir: Path) -> None:
    pause_file(session_dir).unlink(missing_ok=True)


# --- rounds -----------------------------------------------------------------------------------

def save_round(session_dir: Path, record: dict[str, Any]) -> None:
    """Store (or replace, when a crashed round is planned again) the record of one round."""
    path = rounds_file(session_dir)
    rounds = [r for r in read_json(path, []) if r.get("round") != record["round"]]
    rounds.append(record)
    rounds.sort(key=lambda r: r["round"])
    write_json_atomic(path, rounds)


def load_rounds(session_dir: Path) -> list[dict[str, Any]]:
    return read_json(rounds_file(session_dir), [])
