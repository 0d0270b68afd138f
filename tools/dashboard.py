"""A session's study as optuna-dashboard shows it: the journal, read live, with the report's figures
as flat user attributes on every trial, so the dashboard's trial table, history, parallel-coordinate
and importance views show the session as `openrl-agent report` does.

Optuna refuses user attributes on a finished trial, and its journal replay drops any that are
appended, so these figures are not written into `study.journal`: `SessionStorage` is the session's
JournalStorage whose reads add them (recomputed when the journal or confirm.json changes).

Per trial (besides the loop's own rationale, round, planner, action, parent, metrics): status,
dev_accuracy_before, dev_accuracy_after, gain, gain_stderr, steps, wall_s, error; when the session
has a test-split confirmation (`confirm.json`): test_accuracy, test_stderr, test_diff, test_diff_se,
p_mcnemar, p_sign (the exact one-sided sign test), p_holm (it, Holm-adjusted), beats_base,
test_winner. On the study: goal, and with a confirmation test_n, test_base_accuracy,
test_base_stderr, test_winner, test_holds, test_verdict.
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial

from rl_core.sessiondir import confirm_file, journal_file, session_file
from tools.leaderboard import leaderboard

_ROW_KEYS = ("status", "dev_accuracy_before", "dev_accuracy_after", "gain", "gain_stderr", "steps", "wall_s",
             "action", "parent")
_CONFIRM_KEYS = {"test_accuracy": "test_accuracy", "test_stderr": "test_stderr", "diff": "test_diff",
                 "diff_se": "test_diff_se", "p_mcnemar": "p_mcnemar", "p_sign": "p_sign", "p_holm": "p_holm",
                 "beats_base": "beats_base"}


def read_confirmation(session_dir: Path) -> dict[str, Any] | None:
    """confirm.json, or None when the session has none; ValueError naming the file if unreadable."""
    path = confirm_file(session_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}); the dashboard shows no test figures") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object; the dashboard shows no test figures")
    return data


def _confirmation(session_dir: Path) -> dict[str, Any]:
    try:
        return read_confirmation(session_dir) or {}
    except ValueError:  # said once by the dashboard command at start; here the view just goes without
        return {}


def trial_attrs(session_dir: Path) -> dict[str, dict[str, Any]]:
    """trial_id -> the flat attributes the dashboard adds (module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    for row in leaderboard(session_dir):
        attrs = {k: row[k] for k in _ROW_KEYS if row.get(k) is not None}
        if row.get("error"):
            attrs["error"] = f"{row['error'].get('kind')}: {row['error'].get('message')}"[:300]
        out[row["trial_id"]] = attrs
    confirm = _confirmation(session_dir)
    for t in confirm.get("trials") or []:
        if isinstance(t, dict) and t.get("trial_id"):
            attrs = out.setdefault(str(t["trial_id"]), {})
            attrs.update({name: t[k] for k, name in _CONFIRM_KEYS.items() if t.get(k) is not None})
            attrs["test_winner"] = t["trial_id"] == confirm.get("winner")
    return out


def study_attrs(session_dir: Path) -> dict[str, Any]:
    try:
        goal = json.loads(session_file(session_dir).read_text()).get("goal")
    except (OSError, ValueError):
        goal = None
    out: dict[str, Any] = {"goal": goal} if goal else {}
    confirm = _confirmation(session_dir)
    if confirm:
        base = confirm.get("base") or {}
        out.update(test_n=confirm.get("n"), test_base_accuracy=base.get("accuracy"),
                   test_base_stderr=base.get("stderr"), test_winner=confirm.get("winner"),
                   test_holds=confirm.get("holds"), test_verdict=confirm.get("text"))
    return {k: v for k, v in out.items() if v is not None}


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _with(trial: FrozenTrial, extra: dict[str, Any] | None) -> FrozenTrial:
    if not extra:
        return trial
    trial = copy.copy(trial)  # the replayed trial is shared; its copy gets a new attribute dict
    trial.user_attrs = {**trial.user_attrs, **extra}
    return trial


class SessionStorage(JournalStorage):
    """The session's journal (writes go to it unchanged) whose reads carry the report's figures."""

    def __init__(self, session_dir: str | Path) -> None:
        self.session_dir = Path(session_dir)
        super().__init__(JournalFileBackend(str(journal_file(self.session_dir))))
        self._extra_lock = threading.Lock()
        self._extra_key: Any = object()
        self._extra: tuple[dict[str, dict[str, Any]], dict[str, Any]] = ({}, {})

    def extra(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """(trial attrs by trial_id, study attrs), recomputed when a file they come from changed."""
        key = tuple(_stamp(f(self.session_dir)) for f in (journal_file, confirm_file, session_file))
        with self._extra_lock:
            if key != self._extra_key:
                self._extra = (trial_attrs(self.session_dir), study_attrs(self.session_dir))
                self._extra_key = key
            return self._extra

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        trials = super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        by_id = self.extra()[0]
        return [_with(t, by_id.get(t.user_attrs.get("trial_id"))) for t in trials]

    def get_trial(self, trial_id: int) -> FrozenTrial:
        trial = super().get_trial(trial_id)
        return _with(trial, self.extra()[0].get(trial.user_attrs.get("trial_id")))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return {**super().get_study_user_attrs(study_id), **self.extra()[1]}

    def get_all_studies(self) -> list[Any]:  # Optuna's FrozenStudy, which it does not export
        studies = []
        for study in super().get_all_studies():
            study = copy.copy(study)
            study.user_attrs = {**study.user_attrs, **self.extra()[1]}
            studies.append(study)
        return studies


def make_server(session_dir: str | Path, host: str = "127.0.0.1", port: int = 8080) -> tuple[Any, str]:
    """(a threaded WSGI server running optuna-dashboard over SessionStorage, not yet serving; the
    study's URL). Port 0 picks a free port. Raises ImportError without the optuna-dashboard extra,
    OSError when the address cannot be bound."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgi_server

    from optuna_dashboard import wsgi

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a browser's open connections never hold up Ctrl-C

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass  # one line per poll of the browser would bury the URL

    storage = SessionStorage(session_dir)
    server = wsgi_server(host, port, wsgi(storage), server_class=Server, handler_class=QuietHandler)
    study_id = storage.get_study_id_from_name(optuna.get_all_study_names(storage)[0])
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{server.server_port}/dashboard/studies/{study_id}"
