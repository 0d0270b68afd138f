"""Futures and fair, ordered execution: one queue per model, one worker thread for the device.

Every operation the SDK turns into a future is a job here. A route submits it (on the event loop)
and answers at once with its request id; the worker thread runs jobs one at a time and the
`retrieve_future` route waits on the result.

Order: a training client numbers its requests (`seq_id`, from 1) and may send them concurrently
(the chunks of one `forward_backward` race each other on purpose), so a model's job waits until
every earlier seq id of that model has arrived; a resent seq id gets the first one's future.
Fairness: jobs are kept per queue (a model, a sampler, or the server's own queue) and the worker
takes one from each non-empty queue in turn, so one client's long batch cannot starve another's
sampling or steps beyond one request at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rl_core.serve.wire import UserError

log = logging.getLogger(__name__)


@dataclass
class Slot:
    """One future: set once, by the worker, through the event loop."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: Any = None
    error: str | None = None
    category: str = "server"
    retrieved_at: float | None = None  # first handed to the client (kept a while for its retries)


@dataclass
class _Job:
    request_id: str
    fn: Callable[[], Any]


class Scheduler:
    KEEP_RETRIEVED_S = 600.0  # a delivered result stays this long, for a client that retries the fetch

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[str, Slot] = {}
        self._cv = threading.Condition()
        self._ready: dict[str, deque[_Job]] = {}
        self._turns: deque[str] = deque()  # queues with ready jobs, in the order they get served
        self._held: dict[str, dict[int, _Job]] = {}  # model queue -> seq id -> job waiting for earlier ids
        self._next_seq: dict[str, int] = {}
        self._seen: dict[tuple[str, int], str] = {}  # (queue, seq id) -> request id, for resends
        self._stop = False
        self._ids = itertools.count()
        self._thread = threading.Thread(target=self._work, name="tinker-serve-worker", daemon=True)
        self._thread.start()

    # ---- called on the event loop ---------------------------------------------------------
    def submit(self, queue: str, fn: Callable[[], Any], seq_id: int | None = None) -> str:
        if seq_id is not None and (queue, seq_id) in self._seen:
            return self._seen[(queue, seq_id)]
        self._forget_delivered()
        request_id = f"r{next(self._ids)}-{uuid.uuid4().hex[:8]}"
        self._slots[request_id] = Slot()
        job = _Job(request_id, fn)
        with self._cv:
            if seq_id is None:
                self._push(queue, job)
            else:
                self._seen[(queue, seq_id)] = request_id
                self._held.setdefault(queue, {})[seq_id] = job
                self._release(queue)
            self._cv.notify()
        return request_id

    def start_sequence(self, queue: str, first: int = 1) -> None:
        """A new model queue whose seq ids start at `first` (the SDK counts from 1)."""
        with self._cv:
            self._next_seq.setdefault(queue, first)

    def slot(self, request_id: str) -> Slot | None:
        return self._slots.get(request_id)

    def delivered(self, slot: Slot) -> None:
        if slot.retrieved_at is None:
            slot.retrieved_at = time.monotonic()

    def _forget_delivered(self) -> None:
        """Drop results delivered long ago, so a long run's outputs do not pile up in memory."""
        cutoff = time.monotonic() - self.KEEP_RETRIEVED_S
        stale = [r for r, s in self._slots.items() if s.retrieved_at is not None and s.retrieved_at < cutoff]
        for request_id in stale:
            del self._slots[request_id]

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    # ---- under the lock -------------------------------------------------------------------
    def _push(self, queue: str, job: _Job) -> None:
        ready = self._ready.setdefault(queue, deque())
        if not ready and queue not in self._turns:
            self._turns.append(queue)
        ready.append(job)

    def _release(self, queue: str) -> None:
        held = self._held.get(queue, {})
        nxt = self._next_seq.setdefault(queue, 1)
        while nxt in held:
            self._push(queue, held.pop(nxt))
            nxt += 1
        self._next_seq[queue] = nxt

    def _take(self) -> _Job | None:
        with self._cv:
            while not self._turns and not self._stop:
                self._cv.wait()
            if self._stop:
                return None
            queue = self._turns.popleft()
            ready = self._ready[queue]
            job = ready.popleft()
            if ready:
                self._turns.append(queue)  # back of the line: the other queues go first
            return job

    # ---- the worker thread ----------------------------------------------------------------
    def _work(self) -> None:
        while (job := self._take()) is not None:
            slot = self._slots[job.request_id]
            try:
                result, error, category = job.fn(), None, ""
            except UserError as exc:
                result, error, category = None, str(exc), "user"
            except Exception as exc:  # a server bug must fail its request, not the worker
                log.exception("request %s failed", job.request_id)
                result, error, category = None, f"{type(exc).__name__}: {exc}", "server"
            self._loop.call_soon_threadsafe(self._finish, slot, result, error, category)

    @staticmethod
    def _finish(slot: Slot, result: Any, error: str | None, category: str) -> None:
        slot.result, slot.error, slot.category = result, error, category
        slot.done.set()
