"""Scoring in worker processes: `SQLEnvironment(backend="process")`.

What it buys is isolation: a worker that dies (a DuckDB crash, the OOM killer) costs the verdicts it
was computing, not the training run, and no worker shares a GIL or a DuckDB instance with another.
What it does not buy on 2 cores is speed: benchmarks/reward_throughput.py measures it level with the
thread backend once warm and a little behind from a cold start (two interpreters to start, each
computing its own gold results); on machines with more cores it is the one without a shared GIL
(not measured here).

Each worker is `python -m sql_env.procpool`: a plain subprocess, not `multiprocessing`, so it never
re-imports the caller's main module (a CLI that imports torch, a script without a
`__name__ == "__main__"` guard). It holds an in-process `SQLEnvironment` (thread backend, one thread)
built from the parent's settings, and speaks pickles over its stdin/stdout. The parent sends whole
GRPO groups, one group per task, to whichever worker is free, so a group's duplicate SQL still runs
once and its gold result is computed in the worker that needs it. Gold results and the execution
cache are per worker. Workers ignore SIGINT (the parent decides what Ctrl-C means) and exit when
the parent closes their stdin or dies.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, NoReturn


class WorkerDied(Exception):
    """The worker process exited (or was killed) while it held a task."""


class _Worker:
    """One scoring subprocess and the pipes to it. Starting is split in two (`__init__` launches it
    and sends its settings, `ready` waits for its answer) so several can start side by side."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sql_env.procpool"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )
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

    def score(self, groups: list[tuple[str, list[str]]]) -> tuple[list, int]:
        kind, payload = self._call(("score", groups))
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

    def _call(self, message: tuple) -> tuple[str, Any]:
        self._send(message)
        return self._receive()

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
    """`workers` scoring subprocesses fed from one queue; a worker that dies is replaced."""

    def __init__(self, settings: dict[str, Any], workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.executions_run = 0  # queries the workers ran (gold included), summed from their replies
        self.restarts = 0  # workers replaced after dying
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
            if worker.proc.poll() is not None:  # died while idle (killed from outside): not this task's doing
                worker = self._replace(worker)
            scores, executed = worker.score(task)
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


def _serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The worker's loop: an `init` message, then `score` messages until the parent closes stdin."""
    env = None
    while True:
        try:
            kind, payload = pickle.load(inp)
        except EOFError:
            break
        try:
            if kind == "init":
                from sql_env.environment import SQLEnvironment

                env = SQLEnvironment(**payload, backend="thread", workers=1)
                reply: tuple[str, Any] = ("ok", None)
            else:
                before = env.executions_run
                scores = env.score_many(payload)
                reply = ("ok", (scores, env.executions_run - before))
        except Exception as e:  # reaches the parent and is raised there
            reply = ("error", e)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # an exception that does not pickle: send its text
            data = pickle.dumps(("error", RuntimeError(f"{type(e).__name__}: {e}")), protocol=pickle.HIGHEST_PROTOCOL)
        out.write(data)
        out.flush()
    if env is not None:
        env.close()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The pipe to the parent is a private copy of stdout; fd 1 then points at stderr, so nothing a
    # library prints can corrupt the protocol.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, protocol_out)
