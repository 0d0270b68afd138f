"""Process identity and process-group control on Linux, without psutil.

A pid alone cannot identify a process across launcher restarts (pids are reused), so a trial's
process is recorded as (pid, start time in clock ticks since boot, boot id) read from /proc.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcIdentity:
    pid: int
    start_ticks: int
    boot_id: str


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2:].split()


def identity(pid: int) -> ProcIdentity | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return ProcIdentity(pid=pid, start_ticks=int(fields[19]), boot_id=_boot_id())


def is_alive(ident: ProcIdentity) -> bool:
    """True if this exact process (not a later one with the same pid) still runs and is not a zombie."""
    fields = _stat_fields(ident.pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == ident.start_ticks and _boot_id() == ident.boot_id


def kill_group(pgid: int, grace_s: float = 5.0, alive=None) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after `grace_s`.

    `alive()` says whether the leader still runs (for our own children, Popen.poll is the truth;
    for adopted processes, is_alive on the recorded identity).
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                break
            time.sleep(0.05)
        if alive is not None and not alive():
            # The leader is gone; children that ignored SIGTERM still get SIGKILL below once.
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return
