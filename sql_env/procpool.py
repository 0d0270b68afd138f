"""Scoring in worker processes, with a time limit that always holds (SQLEnvironment's default backend).

DuckDB stops a query only between vectors, so one call on one huge value (`repeat('x', 2000000000)`,
`list_sort(range(25000000))`) runs on for seconds after its interrupt. A thread cannot be stopped;
a process can. Each worker publishes the query it is running in a small shared-memory slot (start
time and a digest of (database, SQL)); while a worker owes the parent a reply, the parent's task
thread waits on the pipe and, when no reply has come, reads the slot: a query past its timeout plus
`KILL_GRACE_S` gets its worker killed and replaced. The query's verdict is `timeout`, its digest is
remembered (every worker is told, so the same SQL later costs nothing), and the group is scored
again on the fresh worker. No message per query crosses the pipe: the slot is read only when a reply
is late.

Also isolation: a worker that dies (a DuckDB crash, the OOM killer) costs the verdicts it was
computing, not the training run, and no worker shares a GIL or a DuckDB instance with another.

Each worker is `python -m sql_env.procworker`: a plain subprocess, not `multiprocessing`, so it never
re-imports the caller's main module (a CLI that imports torch, a script without a
`__name__ == "__main__"` guard). It holds an in-process thread-backend `SQLEnvironment` (one thread)
built from the parent's settings, and speaks pickles over its stdin/stdout. The parent sends whole
GRPO groups, one group per task, to whichever worker is free, so a group's duplicate SQL still runs
once and its gold result is computed in the worker that needs it. Workers ignore SIGINT (the parent
decides what Ctrl-C means) and exit when the parent closes their stdin or dies.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, NoReturn

KILL_GRACE_S = 1.0  # how far past its timeout a query may run before its worker is killed
_SLOT = struct.Struct("<Qd16s?")  # sequence number, start (time.monotonic), query digest, running


def query_digest(db_id: str, sql: str) -> bytes:
    return hashlib.blake2b(f"{db_id}\0{sql}".encode(errors="surrogatepass"), digest_size=16).digest()


class QuerySlot:
    """Which query a worker is running, in memory the parent and the worker share (a seqlock: the
    worker bumps the sequence number around each write, a reader retries a torn read)."""

    def __init__(self, fd: int) -> None:
        self._map = mmap.mmap(fd, _SLOT.size)
        self._seq = 0

    def begin(self, digest: bytes) -> None:
        self._write(time.monotonic(), digest, True)

    def end(self) -> None:
        self._write(0.0, bytes(16), False)

    def read(self) -> tuple[float, bytes] | None:
        """(start, digest) of the running query, or None between queries."""
        while True:
            seq, started, digest, running = _SLOT.unpack_from(self._map)
            if seq % 2 == 0 and _SLOT.unpack_from(self._map)[0] == seq:
                return (started, digest) if running else None
            time.sleep(0.001)

    def close(self) -> None:
        self._map.close()

    def _write(self, started: float, digest: bytes, running: bool) -> None:
        self._seq += 1
        struct.pack_into("<Q", self._map, 0, self._seq)  # odd: being written
        _SLOT.pack_into(self._map, 0, self._seq + 1, started, digest, running)
        self._seq += 1


class WorkerDied(Exception):
    """The worker process exited (or was killed) while it held a task."""


class QueryStuck(Exception):
    """The worker was killed because one query outlived its timeout plus the grace."""

    def __init__(self, digest: bytes, held_s: float) -> None:
        super().__init__(f"query {digest.hex()} held its worker {held_s:.2f} s")
        self.digest, self.held_s = digest, held_s


class _Worker:
    """One scoring subprocess, its pipes and its query slot. Starting is split in two (`__init__`
    launches it and sends its settings, `ready` waits for its answer) so several start side by side."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._slot_file = tempfile.TemporaryFile()  # unlinked at once: nothing is left behind
        os.ftruncate(self._slot_file.fileno(), _SLOT.size)
        self.slot = QuerySlot(self._slot_file.fileno())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sql_env.procworker", str(self._slot_file.fileno())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(self._slot_file.fileno(),),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
        self.limit_s = settings.get("timeout_s", 2.0) + KILL_GRACE_S
        self.stuck_known = 0  # how many of the scorer's stuck digests this worker has been told
        self._send(("init", settings))

    def ready(self) -> _Worker:
        try:
            kind, payload = self._receive()
        except WorkerDied:
            raise RuntimeError(f"the SQL scoring worker exited with code {self.proc.returncode} before it "
                               "was ready; its error is on stderr above") from None
        if kind == "error":
            self.close()
            raise payload
        return self

    def score(self, groups: list[tuple[str, list[str]]], stuck: list[tuple[bytes, float]]) -> tuple[list, int]:
        """Scores of the groups; raises QueryStuck (worker killed) or WorkerDied."""
        self._send(("score", (groups, stuck[self.stuck_known:])))
        self.stuck_known = len(stuck)
        self._await_reply()
        kind, payload = self._receive()
        if kind == "error":
            raise payload
        return payload

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.slot.close()
        self._slot_file.close()

    def _await_reply(self) -> None:
        """Wait until the reply starts arriving; kill the worker if one query outlives its limit."""
        fd, wait = self.proc.stdout.fileno(), self.limit_s
        while not select.select([fd], [], [], wait)[0]:
            running = self.slot.read()
            if running is None:  # between queries (matching, pickling): look again later
                wait = self.limit_s
                continue
            started, digest = running
            held = time.monotonic() - started
            if held >= self.limit_s:
                self.proc.kill()
                self.proc.wait()
                raise QueryStuck(digest, held)
            wait = self.limit_s - held

    def _send(self, message: tuple) -> None:
        try:
            pickle.dump(message, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except OSError as e:
            self._died(e)

    def _receive(self) -> tuple[str, Any]:
        try:
            return pickle.load(self.proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as e:
            self._died(e)

    def _died(self, cause: Exception) -> NoReturn:
        self.proc.kill()
        self.proc.wait()
        raise WorkerDied(f"scoring worker {self.proc.pid} exited with code {self.proc.returncode}") from cause


class ProcessScorer:
    """`workers` scoring subprocesses fed from one queue; a worker that dies or sticks is replaced."""

    def __init__(self, settings: dict[str, Any], workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.executions_run = 0  # queries the workers ran (gold included), summed from their replies
        self.restarts = 0  # workers replaced after dying or being killed for a stuck query
        self.stuck: list[tuple[bytes, float]] = []  # (digest, seconds held) of queries killed, oldest first
        self._lock = threading.Lock()
        self._idle: queue.SimpleQueue[_Worker] | None = None
        self._all: list[_Worker] = []
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False

    def score_many(
        self, groups: Sequence[tuple[str, Sequence[str]]], on_crash: Callable[[str, str], Any]
    ) -> list[list]:
        """Scores of every group, in order. The completions of a group whose worker died are
        retried one per task; one whose worker dies again is scored by `on_crash(example_id, completion)`."""
        jobs = [(example_id, list(completions)) for example_id, completions in groups]
        results = self._run([[job] for job in jobs])
        for i, outcome in enumerate(results):
            if outcome is None:  # find the culprit: each completion alone
                example_id, completions = jobs[i]
                singles = self._run([[(example_id, [c])] for c in completions])
                results[i] = [[single[0][0] if single is not None else on_crash(example_id, c)
                               for single, c in zip(singles, completions, strict=True)]]
        return [outcome[0] for outcome in results]  # type: ignore[index]

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (starts them); for tests and diagnostics."""
        self._start()
        with self._lock:
            return sorted(w.proc.pid for w in self._all)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, None
            workers, self._all = self._all, []
        if threads is not None:
            threads.shutdown(wait=True)
        for worker in workers:
            worker.close()

    # -- internals ---------------------------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the SQL environment is closed")
            if self._idle is not None:
                return
            # Launched side by side; one that cannot start fails the call, with its error.
            launched = [_Worker(self.settings) for _ in range(self.workers)]
            try:
                workers = [worker.ready() for worker in launched]
            except BaseException:
                for worker in launched:
                    worker.close()
                raise
            self._all = list(workers)
            self._idle = queue.SimpleQueue()
            for worker in workers:
                self._idle.put(worker)
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="sql-env-proc")

    def _run(self, tasks: list[list[tuple[str, list[str]]]]) -> list[list | None]:
        """Each task's scores, or None where its worker died (the worker is then replaced)."""
        self._start()
        assert self._threads is not None
        return list(self._threads.map(self._run_one, tasks))

    def _run_one(self, task: list[tuple[str, list[str]]]) -> list | None:
        assert self._idle is not None
        worker = self._idle.get()
        try:
            while True:
                if worker.proc.poll() is not None:  # died while idle (killed from outside): not this task's doing
                    worker = self._replace(worker)
                try:
                    scores, executed = worker.score(task, self.stuck)
                    break
                except QueryStuck as stuck:  # the culprit is known: score the task again without it
                    with self._lock:
                        self.stuck.append((stuck.digest, stuck.held_s))
                    worker = self._replace(worker)
        except WorkerDied:
            worker = self._replace(worker)
            return None
        finally:
            self._idle.put(worker)
        with self._lock:
            self.executions_run += executed
        return scores

    def _replace(self, dead: _Worker) -> _Worker:
        """A ready worker in place of `dead`; if none starts, `dead` stays (the next task tries again)."""
        dead.close()
        replacement = _Worker(self.settings).ready()
        with self._lock:
            self.restarts += 1
            self._all = [replacement if w is dead else w for w in self._all]
        return replacement


def serve(inp: BinaryIO, out: BinaryIO, handle: Callable[[str, Any], Any]) -> None:
    """A worker's loop: each message is `handle(kind, payload)`'s reply, until stdin closes."""
    from sql_env import sandbox

    sandbox.ABANDON_STUCK = False  # a stuck query keeps this worker busy until the pool kills it
    while True:
        try:
            kind, payload = pickle.load(inp)
        except EOFError:
            break
        try:
            reply: tuple[str, Any] = ("ok", handle(kind, payload))
        except Exception as e:  # reaches the parent and is raised there
            reply = ("error", e)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # an exception that does not pickle: send its text
            data = pickle.dumps(("error", RuntimeError(f"{type(e).__name__}: {e}")), protocol=pickle.HIGHEST_PROTOCOL)
        out.write(data)
        out.flush()
