"""VirtualLauncher: a cluster of K machines, simulated honestly on this one.

What a session would do with K machines cannot be measured on a 2-core box by running K trials
side by side (they would share the cores and each would train at a fraction of its speed). Instead
every trial really runs alone, on all cores, one at a time (a LocalLauncher with one slot), while
the session sees a discrete-event clock that charges each of the K slots as a separate machine:

- `virtual_now()` is the session's clock (agent/budget.py takes it through Research's Timekeeper):
  it advances with the agent's own real time; the real runs of trials do not count on it.
- A trial submitted at virtual time t starts at t on a free slot (or, with all K busy, when the
  first one frees); it ends at its start plus the real wall seconds its run took alone.
- The agent waits by asking `status` of a trial that has not ended: the launcher then runs, really
  and in order of virtual start, every trial that has started and not yet run, and moves the clock
  to the next virtual end (at most `max_jump_s` at a time, so the agent still looks at its own
  deadline about as often as it would in real time).
- A decision at virtual time t sees only what had happened by t: when a real run finishes, every
  file it wrote (result.json, metrics, evaluations, samples, weights, log) is moved into the trial
  directory's `HELD_DIR` and moved back when the clock reaches the trial's end. Meanwhile its JSONL
  streams (metrics, evaluations, samples) show the lines the run had written by the same elapsed
  time (recorded while it ran), so progress, the pruner and challenger screens see a running
  trial as they would on a cluster; a new evaluation line is an event the clock stops at, like an
  end. A trial is really run only after every trial that started before it, so what a decision at
  t caused (a trial starting at or after t) never runs before what it could have seen.

A cancel frees the slot at once and discards the held files (the lines shown so far stay, as a
killed run's would). The state is in memory: a virtual session cannot be resumed by another
process. Give the confirmation a launcher on the same `VirtualClock` so the session's virtual
length includes it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.base import TERMINAL, LauncherError, TrialHandle, TrialStatus, spec_identity
from cluster.local import STATE_FILE, CommandBuilder, LocalLauncher
from cluster.outcome import LOG_FILE, mark_cancelled, read_result, read_tail
from rl_core import sessiondir
from rl_core.trialdir import (
    EVAL_FILE,
    LAUNCH_SPEC_FILE,
    METRICS_FILE,
    REPORT_FILE,
    RESULT_FILE,
    SAMPLES_FILE,
    write_json_atomic,
)

HELD_DIR = ".virtual-held"  # a finished run's files, out of the agent's sight until its virtual end
_KEPT = frozenset({LAUNCH_SPEC_FILE, STATE_FILE, HELD_DIR})  # what a running trial's directory shows
STREAMS = (METRICS_FILE, EVAL_FILE, REPORT_FILE, SAMPLES_FILE)  # shown line by line as virtual time passes
EVENT_STREAMS = (EVAL_FILE, REPORT_FILE)  # a new line here is something the agent acts on (screens, pruning)


class VirtualClock:
    """Virtual seconds since its creation: real time, except while `stopped` (a real trial run),
    plus the jumps `advance_to` makes. Several launchers may share one (session and confirmation)."""

    def __init__(self) -> None:
        self._offset = -time.monotonic()

    def now(self) -> float:
        return time.monotonic() + self._offset

    def advance_to(self, t: float) -> None:
        now = self.now()
        if t > now:
            self._offset += t - now

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The clock stands still inside the block: the real run of a trial is no agent time."""
        t = self.now()
        try:
            yield
        finally:
            self._offset = t - time.monotonic()


@dataclass
class _Trial:
    handle: TrialHandle
    spec: dict[str, Any]
    trial_dir: Path
    index: int  # submit order: the order of virtual starts, so the order of real runs
    submitted_v: float
    state: str = "queued"  # virtual: queued | running | a terminal status once its end is reached
    start_v: float | None = None
    run_s: float | None = None  # real wall seconds of its run alone (None: not run yet)
    outcome: str | None = None  # the real run's terminal status
    end_v: float | None = None
    # per stream: (seconds since the real start, file size then), as the real run grew it
    grown: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    shown: dict[str, int] = field(default_factory=dict)  # bytes of each stream shown so far

    @property
    def known_end(self) -> float | None:
        if self.start_v is None or self.run_s is None:
            return None
        return self.start_v + self.run_s


class VirtualLauncher:
    backend = "virtual"

    def __init__(self, runs_dir: str | os.PathLike[str] = "runs", slots: int = 4, *,
                 clock: VirtualClock | None = None, threads_per_trial: int | None = None,
                 wall_s: float | None = None, command: CommandBuilder | None = None,
                 max_jump_s: float | None = 15.0, real_poll_s: float = 0.05) -> None:
        if slots < 1:
            raise LauncherError(f"slots must be at least 1, got {slots}")
        self.runs_dir = Path(runs_dir)
        self.slots = slots
        self.clock = clock or VirtualClock()
        self.max_jump_s = max_jump_s
        self.real_poll_s = real_poll_s
        threads = threads_per_trial or len(os.sched_getaffinity(0))
        self.real = LocalLauncher(runs_dir=self.runs_dir, slots=1, threads_per_trial=threads,
                                  wall_s=wall_s, command=command)
        self._trials: dict[tuple[str, str], _Trial] = {}
        self.real_order: list[str] = []  # trial ids in the order they really ran

    def virtual_now(self) -> float:
        """The session's clock (Research and the confirmation read it instead of the monotonic clock)."""
        return self.clock.now()

    # ---- contract -------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> TrialHandle:
        session, trial_id = spec_identity(spec)
        known = self._trials.get((session, trial_id))
        if known is not None:
            return known.handle
        trial_dir = sessiondir.trial_dir(sessiondir.session_dir_of(self.runs_dir, session), trial_id)
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(trial_dir / LAUNCH_SPEC_FILE, spec)
        handle = TrialHandle(session=session, trial_id=trial_id, backend=self.backend, ref=str(trial_dir))
        trial = _Trial(handle, spec, trial_dir, index=len(self._trials), submitted_v=self.clock.now())
        self._trials[(session, trial_id)] = trial
        self._start_queued(trial.submitted_v)
        return handle

    def poll(self) -> None:
        self._settle()

    def status(self, handle: TrialHandle) -> TrialStatus:
        """The trial's status at the current virtual time. Asking about a trial that has not ended
        is how the agent waits: the clock moves to the next virtual end (or `max_jump_s`)."""
        trial = self._get(handle)
        if trial.state in TERMINAL:
            return trial.state  # type: ignore[return-value]
        self._settle()
        events = [e for t in self._running() for e in _events(t, self.clock.now())]
        if trial.state not in TERMINAL and events:
            target = min(events)
            if self.max_jump_s is not None:
                target = min(target, self.clock.now() + self.max_jump_s)
            self.clock.advance_to(target)
            self._settle()
        return trial.state  # type: ignore[return-value]

    def cancel(self, handle: TrialHandle) -> None:
        """Stop a trial now (virtual time): a finished run's files are discarded, its slot frees."""
        trial = self._get(handle)
        if trial.state in TERMINAL:
            return
        now = self.clock.now()
        if trial.known_end is not None and trial.known_end <= now:
            self._settle()  # it ended before the cancel: a finished trial, kept
            return
        shutil.rmtree(trial.trial_dir / HELD_DIR, ignore_errors=True)
        mark_cancelled(trial.trial_dir)
        trial.state, trial.end_v = "cancelled", now
        self._start_queued(now)

    def logs(self, handle: TrialHandle, tail: int = 200) -> str:
        return read_tail(self._get(handle).trial_dir / LOG_FILE, tail)

    def result(self, handle: TrialHandle) -> dict[str, Any] | None:
        trial = self._get(handle)
        if trial.state not in TERMINAL or trial.state == "cancelled":
            return None
        return read_result(trial.trial_dir)

    def reattach(self, session: str) -> list[TrialHandle]:
        """The trials this launcher knows of the session (its state lives in memory only)."""
        return [t.handle for (s, _), t in self._trials.items() if s == session]

    def schedule(self) -> list[dict[str, Any]]:
        """Every trial's virtual start and end and its real seconds, in submit order (for reports)."""
        return [{"trial_id": t.handle.trial_id, "state": t.state, "submitted_v": t.submitted_v,
                 "start_v": t.start_v, "end_v": t.end_v, "run_s": t.run_s}
                for t in sorted(self._trials.values(), key=lambda t: t.index)]

    # ---- the event loop -------------------------------------------------------------------
    def _running(self) -> list[_Trial]:
        return sorted((t for t in self._trials.values() if t.state == "running"), key=lambda t: t.index)

    def _start_queued(self, at: float) -> None:
        """Give free slots to queued trials, in submit order, from virtual time `at`."""
        queued = sorted((t for t in self._trials.values() if t.state == "queued"), key=lambda t: t.index)
        free = self.slots - len(self._running())
        for trial in queued[:max(0, free)]:
            trial.state, trial.start_v = "running", max(at, trial.submitted_v)

    def _settle(self) -> None:
        """Bring every trial up to the clock: run the started ones not yet run, then end (reveal)
        those whose virtual end has come, in the order of their ends, starting queued ones."""
        while True:
            for trial in self._running():
                if trial.run_s is None:
                    self._run_real(trial)
            now = self.clock.now()
            ended = [t for t in self._running() if t.known_end is not None and t.known_end <= now]
            if not ended:
                for trial in self._running():
                    _show(trial, now - (trial.start_v or now))
                return
            first = min(ended, key=lambda t: (t.known_end, t.index))
            _reveal(first.trial_dir)
            first.state, first.end_v = first.outcome or "failed", first.known_end
            self._start_queued(first.known_end or now)

    def _run_real(self, trial: _Trial) -> None:
        """Run the trial alone on this machine, the clock stopped; hide what it wrote."""
        with self.clock.stopped():
            t0 = time.monotonic()
            handle = self.real.submit(trial.spec)
            while (status := self.real.status(handle)) not in TERMINAL:
                _record_growth(trial, time.monotonic() - t0)
                time.sleep(self.real_poll_s)
            trial.run_s = time.monotonic() - t0
            _record_growth(trial, trial.run_s)
            trial.outcome = status
            self.real_order.append(trial.handle.trial_id)
            _hold(trial.trial_dir)

    def _get(self, handle: TrialHandle) -> _Trial:
        trial = self._trials.get((handle.session, handle.trial_id))
        if trial is None:
            raise LauncherError(f"no trial {handle.trial_id} of session {handle.session} in this virtual "
                                "cluster (its state lives in memory: a virtual session cannot be resumed)")
        return trial


def _record_growth(trial: _Trial, elapsed: float) -> None:
    for name in STREAMS:
        try:
            size = (trial.trial_dir / name).stat().st_size
        except FileNotFoundError:
            continue
        seen = trial.grown.setdefault(name, [])
        if not seen or size > seen[-1][1]:
            seen.append((elapsed, size))


def _events(trial: _Trial, now: float) -> list[float]:
    """Virtual times after `now` at which the agent would notice something of this trial: its end,
    and each new evaluation line."""
    if trial.known_end is None or trial.start_v is None:
        return []
    lines = [trial.start_v + t for name in EVENT_STREAMS for t, _ in trial.grown.get(name, [])]
    return [t for t in lines if t > now] + [trial.known_end]


def _show(trial: _Trial, elapsed: float) -> None:
    """Make each held stream show the whole lines its run had written `elapsed` seconds after its start."""
    held = trial.trial_dir / HELD_DIR
    for name, grown in trial.grown.items():
        size = max((n for t, n in grown if t <= elapsed), default=0)
        if size <= trial.shown.get(name, 0) or not (held / name).exists():
            continue
        with open(held / name, "rb") as f:
            data = f.read(size)
        data = data[:data.rfind(b"\n") + 1]
        if len(data) > trial.shown.get(name, 0):
            tmp = trial.trial_dir / f".{name}.virtual"
            tmp.write_bytes(data)
            os.replace(tmp, trial.trial_dir / name)
            trial.shown[name] = len(data)


def _hold(trial_dir: Path) -> None:
    held = trial_dir / HELD_DIR
    held.mkdir(exist_ok=True)
    for entry in trial_dir.iterdir():
        if entry.name not in _KEPT:
            os.replace(entry, held / entry.name)


def _reveal(trial_dir: Path) -> None:
    """Move the held files back, result.json last (readers take it as the sign of a finished trial)."""
    held = trial_dir / HELD_DIR
    if not held.is_dir():
        return
    for entry in sorted(held.iterdir(), key=lambda p: p.name == RESULT_FILE):
        os.replace(entry, trial_dir / entry.name)
    held.rmdir()
