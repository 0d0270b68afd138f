"""LocalLauncher: trials as subprocesses on N slots of this machine.

Each trial runs `python -m rl_core.trial <trial_dir>/launch_spec.json --out <trial_dir>` in its own
process group (so cancel and the wall-time limit kill the runner and anything it spawned), with
its thread pools sized by environment variables so slots do not oversubscribe the cores:
OMP_NUM_THREADS / MKL_NUM_THREADS / OPENBLAS_NUM_THREADS for the math libraries and
OPENRL_TORCH_THREADS, which the trial runner passes to torch.set_num_threads.

State lives on disk so a launcher can die at any moment: `<trial_dir>/launcher.json` records the
state, pid, process start time and wall limit. A new LocalLauncher over the same runs_dir adopts
running trials (pid *and* /proc start time must match, so a reused pid is not mistaken for the
trial), re-queues trials that never started, and picks up results written while it was away.
Two live launchers over one session are not supported (both would start its queued trials).

Call `poll()` regularly (the agent's collect loop does): it reaps finished trials, enforces wall
limits and starts queued trials as slots free. `status()` polls too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster import procs
from cluster.base import TERMINAL, LauncherError, TrialHandle, TrialStatus, spec_identity
from cluster.outcome import (
    LOG_FILE,
    default_wall_s,
    ensure_result,
    mark_cancelled,
    read_json_file,
    read_result,
    read_tail,
)
from rl_core import sessiondir
from rl_core.trialdir import LAUNCH_SPEC_FILE as SPEC_FILE
from rl_core.trialdir import write_json_atomic

STATE_FILE = "launcher.json"  # private to the launchers: what they need to re-attach a process
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENRL_TORCH_THREADS")

CommandBuilder = Callable[[dict[str, Any], Path], list[str]]


def build_command(spec: dict[str, Any], trial_dir: Path) -> list[str]:
    """The command that runs one trial; a pure function of the spec and its directory."""
    del spec  # the spec travels as a file; kept in the signature so overrides may use it
    return [sys.executable, "-m", "rl_core.trial", str(trial_dir / SPEC_FILE), "--out", str(trial_dir)]


def default_slots(cpus: int | None = None) -> int:
    """One slot per core on small machines; one per two cores past four (tiny-policy GRPO stops
    gaining from threads at about two, so more slots beat more threads)."""
    n = cpus or len(os.sched_getaffinity(0))
    return n if n <= 4 else n // 2


@dataclass
class _Trial:
    handle: TrialHandle
    spec: dict[str, Any]
    trial_dir: Path
    state: str = "queued"
    proc: subprocess.Popen | None = None
    ident: procs.ProcIdentity | None = None
    started_at: float | None = None
    wall_s: float | None = None
    timed_out: bool = False
    owned: bool = False  # started by this launcher instance: its exit code is known


class LocalLauncher:
    backend = "local"

    def __init__(self, runs_dir: str | os.PathLike[str] = "runs", slots: int | None = None,
                 threads_per_trial: int | None = None, wall_s: float | None = None,
                 command: CommandBuilder | None = None, kill_grace_s: float = 5.0) -> None:
        cpus = len(os.sched_getaffinity(0))
        self.runs_dir = Path(runs_dir)
        self.slots = slots if slots is not None else default_slots(cpus)
        if self.slots < 1:
            raise LauncherError(f"slots must be at least 1, got {self.slots}")
        self.threads = threads_per_trial if threads_per_trial is not None else max(1, cpus // self.slots)
        self.wall_s = wall_s
        self.kill_grace_s = kill_grace_s
        self._command = command or build_command
        self._trials: dict[tuple[str, str], _Trial] = {}
        self._queue: deque[tuple[str, str]] = deque()

    # ---- contract -------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> TrialHandle:
        session, trial_id = spec_identity(spec)
        trial_dir = sessiondir.trial_dir(sessiondir.session_dir_of(self.runs_dir, session), trial_id)
        known = self._trials.get((session, trial_id))
        if known is None and (trial_dir / STATE_FILE).exists():
            known = self._adopt(trial_dir)  # resubmitting after a restart: same trial, no rerun
        if known is not None:
            return known.handle
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(trial_dir / SPEC_FILE, spec)
        handle = TrialHandle(session=session, trial_id=trial_id, backend=self.backend, ref=str(trial_dir))
        trial = _Trial(handle=handle, spec=spec, trial_dir=trial_dir,
                       wall_s=self.wall_s if self.wall_s is not None else default_wall_s(spec))
        self._trials[(session, trial_id)] = trial
        self._queue.append((session, trial_id))
        self._save(trial)
        self.poll()
        return handle

    def poll(self) -> None:
        for trial in list(self._trials.values()):
            if trial.state == "running":
                self._check(trial)
        while self._queue and self._running() < self.slots:
            self._start(self._trials[self._queue.popleft()])

    def status(self, handle: TrialHandle) -> TrialStatus:
        self.poll()
        return self._get(handle).state  # type: ignore[return-value]

    def cancel(self, handle: TrialHandle) -> None:
        trial = self._get(handle)
        if trial.state in TERMINAL:
            return
        if trial.state == "queued":
            self._queue.remove((handle.session, handle.trial_id))
        else:
            finished_first = read_result(trial.trial_dir) is not None
            self._kill(trial)
            if finished_first:  # it wrote its result before the cancel: a finished trial, keep it
                self._finish(trial, trial.proc.poll() if trial.proc else None)
                return
            mark_cancelled(trial.trial_dir)
        trial.state = "cancelled"
        self._save(trial, finished_at=time.time())
        self.poll()

    def logs(self, handle: TrialHandle, tail: int = 200) -> str:
        return read_tail(self._get(handle).trial_dir / LOG_FILE, tail)

    def result(self, handle: TrialHandle) -> dict[str, Any] | None:
        trial = self._get(handle)
        status = self.status(handle)
        return read_result(trial.trial_dir) if status in TERMINAL and status != "cancelled" else None

    def reattach(self, session: str) -> list[TrialHandle]:
        trials_dir = sessiondir.trials_dir(sessiondir.session_dir_of(self.runs_dir, session))
        found = sorted(trials_dir.glob(f"*/{STATE_FILE}")) if trials_dir.is_dir() else []
        handles = []
        for state_file in found:
            key = (session, state_file.parent.name)
            trial = self._trials.get(key) or self._adopt(state_file.parent)
            handles.append(trial.handle)
        self.poll()
        return handles

    # ---- internals ------------------------------------------------------------------------
    def _running(self) -> int:
        return sum(t.state == "running" for t in self._trials.values())

    def _get(self, handle: TrialHandle) -> _Trial:
        trial = self._trials.get((handle.session, handle.trial_id))
        if trial is not None:
            return trial
        trial_dir = Path(handle.ref)
        if not (trial_dir / STATE_FILE).exists():
            raise LauncherError(f"no trial {handle.trial_id} of session {handle.session} under {trial_dir}")
        return self._adopt(trial_dir)

    def _start(self, trial: _Trial) -> None:
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        env.update({name: str(self.threads) for name in THREAD_ENV})
        cmd = self._command(trial.spec, trial.trial_dir)
        trial.started_at = time.time()
        trial.owned = True
        with open(trial.trial_dir / LOG_FILE, "ab") as log:
            try:
                trial.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            except OSError as exc:
                log.write(f"launcher: cannot start {cmd[0]!r}: {exc}\n".encode())
                trial.state = "running"  # so _finish records it like any failed run
                self._finish(trial, returncode=127)
                return
        trial.ident = procs.identity(trial.proc.pid)
        trial.state = "running"
        self._save(trial, command=cmd)

    def _check(self, trial: _Trial) -> None:
        if trial.proc is not None:
            returncode = trial.proc.poll()
            done = returncode is not None
        else:  # adopted from an earlier launcher: not our child, no exit code to be had
            returncode, done = None, trial.ident is None or not procs.is_alive(trial.ident)
        if done:
            self._finish(trial, returncode)
        elif trial.wall_s is not None and time.time() - (trial.started_at or 0) > trial.wall_s:
            trial.timed_out = True
            self._kill(trial)
            self._finish(trial, trial.proc.returncode if trial.proc else None)

    def _kill(self, trial: _Trial) -> None:
        if trial.proc is not None:
            procs.kill_group(trial.proc.pid, self.kill_grace_s, alive=lambda: trial.proc.poll() is None)
        elif trial.ident is not None:
            procs.kill_group(trial.ident.pid, self.kill_grace_s, alive=lambda: procs.is_alive(trial.ident))

    def _finish(self, trial: _Trial, returncode: int | None) -> None:
        had_result = read_result(trial.trial_dir) is not None
        result = ensure_result(trial.trial_dir, trial.spec, returncode,
                               timed_out=trial.timed_out, wall_s=trial.wall_s)
        unobserved = not trial.owned and not had_result and not trial.timed_out
        if unobserved:
            trial.state = "lost"
        else:
            trial.state = "succeeded" if result.get("status") == "succeeded" else "failed"
        self._save(trial, returncode=returncode, finished_at=time.time())

    def _adopt(self, trial_dir: Path) -> _Trial:
        """Rebuild a trial from its launcher.json (written by this or an earlier launcher)."""
        state = read_json_file(trial_dir / STATE_FILE)
        spec = read_json_file(trial_dir / SPEC_FILE)
        session, trial_id = spec_identity(spec)
        handle = TrialHandle(session=session, trial_id=trial_id, backend=self.backend, ref=str(trial_dir))
        trial = _Trial(handle=handle, spec=spec, trial_dir=trial_dir, state=state.get("state", "queued"),
                       started_at=state.get("started_at"), wall_s=state.get("wall_s"))
        if state.get("pid") is not None:
            trial.ident = procs.ProcIdentity(state["pid"], state["start_ticks"], state.get("boot_id", ""))
        self._trials[(session, trial_id)] = trial
        if trial.state == "queued":
            self._queue.append((session, trial_id))
        elif trial.state == "running":
            self._check(trial)
        return trial

    def _save(self, trial: _Trial, **extra: Any) -> None:
        path = trial.trial_dir / STATE_FILE
        previous = read_json_file(path) if path.exists() else {}
        ident = trial.ident
        record = {**previous, **extra, "state": trial.state, "threads": self.threads, "wall_s": trial.wall_s,
                  "started_at": trial.started_at, "pid": ident.pid if ident else None,
                  "start_ticks": ident.start_ticks if ident else None,
                  "boot_id": ident.boot_id if ident else None, "timed_out": trial.timed_out}
        write_json_atomic(path, record)

