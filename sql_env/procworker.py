"""A scoring worker process of `sql_env.procpool`: `python -m sql_env.procworker SLOT_FD`.

It holds a thread-backend `SQLEnvironment` with one thread, so it runs one query at a time and can
publish that query in the shared slot the parent watches. A query the parent once killed a worker
for is answered `timeout` here without running it.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from sql_env.environment import SQLEnvironment
from sql_env.procpool import QuerySlot, query_digest, serve
from sql_env.types import Execution


class _WatchedEnvironment(SQLEnvironment):
    """Every sandbox run is published in the slot while it runs; known stuck queries never run."""

    def __init__(self, slot: QuerySlot, **settings: Any) -> None:
        super().__init__(**settings, backend="thread", workers=1)
        self.slot = slot
        self.stuck: dict[bytes, float] = {}

    def _execute(self, db_id: str, sql: str) -> Execution:
        digest = query_digest(db_id, sql)
        held = self.stuck.get(digest)
        if held is not None:
            return Execution("timeout", elapsed_s=held, error=(
                f"query ran longer than {self.timeout_s:g} s and did not stop when interrupted (one huge value); "
                f"its worker process was stopped after {held:.1f} s and replaced"))
        self.slot.begin(digest)
        try:
            return super()._execute(db_id, sql)
        finally:
            self.slot.end()


def main(slot_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The pipe to the parent is a private copy of stdout; fd 1 then points at stderr, so nothing a
    # library prints can corrupt the protocol.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    slot = QuerySlot(slot_fd)
    env: _WatchedEnvironment | None = None

    def handle(kind: str, payload: Any) -> Any:
        nonlocal env
        if kind == "init":
            env = _WatchedEnvironment(slot, **payload)
            return None
        groups, stuck = payload
        env.stuck.update(stuck)
        before = env.executions_run
        scores = env.score_many(groups)
        return scores, env.executions_run - before

    try:
        serve(sys.stdin.buffer, protocol_out, handle)
    finally:
        if env is not None:
            env.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
