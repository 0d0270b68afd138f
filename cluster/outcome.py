"""What a finished trial process left behind: its result.json, or a classified failure we write for it.

The trial runner writes result.json itself whenever it can (bad spec, NaN loss, OOM it caught).
When the process dies before that (SIGSEGV in a native kernel, the kernel's OOM killer, a wall-time
kill), the launcher writes the result instead, so the agent always finds one result per trial.
Shared by the local launcher and the in-pod entry point (cluster/pod_entry.py).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cluster.base import LauncherError
from rl_core.spec import Budget, SpecError
from rl_core.trialdir import (
    LOG_FILE,
    RESULT_FILE,
    TrialDirError,
    failed_result,
    mark_cancelled,
    read_result,
    write_result,
)

__all__ = ["LOG_FILE", "RESULT_FILE", "classify_exit", "default_wall_s", "ensure_result", "failed_result",
           "mark_cancelled", "read_json_file", "read_result", "read_tail"]
TAIL_LINES = 40

# Substrings that identify an out-of-memory death in a log tail (Python, torch CPU and CUDA).
_OOM_MARKERS = ("MemoryError", "OutOfMemoryError", "CUDA out of memory", "DefaultCPUAllocator: can't allocate")


def read_tail(path: Path, lines: int = TAIL_LINES, max_bytes: int = 64_000) -> str:
    """Last `lines` lines of a (possibly large) text file, reading only its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


def read_json_file(path: Path) -> dict[str, Any]:
    """A launcher-owned JSON object file (launcher.json, launch_spec.json); unreadable ones say the fix."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LauncherError(f"cannot read {path} ({exc}); delete the trial directory to forget it") from None
    if not isinstance(data, dict):
        raise LauncherError(f"{path} is not a JSON object; delete the trial directory to forget it")
    return data


def classify_exit(returncode: int | None, log_tail: str, *, timed_out: bool = False,
                  wall_s: float | None = None) -> dict[str, str]:
    """An error {kind, message} (contract kinds) for a process that left no result.json.

    returncode follows subprocess: negative = killed by that signal; None = unknown (the process
    ended while no launcher watched it).
    """
    if timed_out:
        return {"kind": "timeout", "message": f"killed after the launcher's wall-time limit of {wall_s:g}s; "
                                              "raise wall_s or lower budget.max_seconds/eval.limit"}
    if any(marker in log_tail for marker in _OOM_MARKERS):
        return {"kind": "oom", "message": "ran out of memory (see log tail); use fewer slots, a smaller "
                                          "batch (prompts_per_step, group_size) or shorter max_new_tokens"}
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = _signal_name(sig)
        if sig == signal.SIGKILL:
            return {"kind": "oom", "message": f"killed by {name}, most often the kernel's out-of-memory killer "
                                              "(check `dmesg`); use fewer slots or a smaller batch"}
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGABRT, signal.SIGFPE):
            return {"kind": "crash", "message": f"the trial process crashed with {name} (a native-code fault)"}
        return {"kind": "crash", "message": f"the trial process was terminated by {name}"}
    if returncode is None:
        return {"kind": "crash", "message": "the trial process ended while no launcher was watching it "
                                            "and left no result.json (exit status unknown)"}
    last = _last_error_line(log_tail.splitlines())
    detail = f": {last}" if last else ""
    if returncode == 0:
        return {"kind": "crash", "message": "the trial process exited 0 without writing result.json"}
    return {"kind": "crash", "message": f"the trial process exited with code {returncode}{detail}"}


def ensure_result(trial_dir: Path, spec: dict[str, Any], returncode: int | None, *,
                  timed_out: bool = False, wall_s: float | None = None) -> dict[str, Any]:
    """Return the trial's result, writing a classified failed one (atomically) if it left none.

    A timeout overrides a result the runner may have started to write only if none is complete.
    """
    try:
        existing = read_result(trial_dir)
    except TrialDirError as exc:  # a damaged result is no outcome: record why instead
        result = failed_result(spec, "corrupt", str(exc))
        write_result(trial_dir, result)
        return result
    if existing is not None:
        return existing
    tail = read_tail(trial_dir / LOG_FILE)
    error = classify_exit(returncode, tail, timed_out=timed_out, wall_s=wall_s)
    result = failed_result(spec, error["kind"], error["message"], tail)
    write_result(trial_dir, result)
    return result


def default_wall_s(spec: dict[str, Any]) -> float | None:
    """The wall-time limit of a trial process (rl_core.spec.Budget.wall_limit_s: one formula for
    the local slots and Kubernetes' activeDeadlineSeconds); None if unbounded."""
    try:
        return Budget(**(spec.get("budget") or {})).wall_limit_s()
    except (SpecError, TypeError):
        return Budget().wall_limit_s()


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _last_error_line(lines: Iterable[str]) -> str:
    """The last line that looks like an exception ('ValueError: ...'), else the last non-empty line."""
    lines = [ln.strip() for ln in lines if ln.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception")) or head in ("KeyboardInterrupt", "SystemExit"):
            return line[:300]
    return lines[-1][:300] if lines else ""
