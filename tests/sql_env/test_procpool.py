"""The process backend of SQLEnvironment on real worker processes: signals, deaths, errors, close."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from sql_env.environment import SQLEnvironment
from tests.sql_env.test_environment import dataset, fence  # noqa: F401  (the module-scoped fixture)

RUNAWAY = fence("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r")
RIGHT = fence("SELECT count(*) FROM employees")
WRONG = fence("SELECT count(*) FROM departments")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def wait_for_new_pid(env: SQLEnvironment, old: list[int], timeout_s: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = env.worker_pids()
        if pids != old:
            return pids
        time.sleep(0.02)
    raise AssertionError(f"no replacement for workers {old}")


def score_in_background(env: SQLEnvironment, completions: list[str]) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(env.score("q1", completions)))
    thread.start()
    return thread, out


def test_workers_are_separate_processes_that_ignore_sigint_and_exit_on_close(dataset: Path) -> None:  # noqa: F811
    env = SQLEnvironment(str(dataset), workers=2, backend="process")
    assert [s.correct for s in env.score("q1", [RIGHT, WRONG])] == [True, False]
    pids = env.worker_pids()
    assert len(pids) == 2 and os.getpid() not in pids and all(alive(p) for p in pids)
    for pid in pids:
        os.kill(pid, signal.SIGINT)  # what Ctrl-C sends the whole process group
    time.sleep(0.2)
    assert [s.correct for s in env.score("q1", [RIGHT, WRONG])] == [True, False]
    assert env.worker_pids() == pids and env.worker_restarts == 0
    env.close()
    assert not any(alive(p) for p in pids)


def test_a_worker_killed_mid_group_is_replaced_and_the_group_scored_again(dataset: Path) -> None:  # noqa: F811
    with SQLEnvironment(str(dataset), workers=1, timeout_s=1.5, backend="process") as env:
        (first,) = env.worker_pids()
        thread, out = score_in_background(env, [RUNAWAY, RIGHT, WRONG])
        time.sleep(0.5)  # the group is in the runaway query
        os.kill(first, signal.SIGKILL)
        thread.join(timeout=30)
        (scores,) = out
        assert [s.metrics["status"] for s in scores] == ["timeout", "ok", "ok"]  # each one alone, again
        assert [s.correct for s in scores] == [False, True, False]
        assert env.worker_restarts == 1 and env.worker_pids() != [first]


def test_a_query_whose_worker_dies_twice_is_a_runtime_error_and_the_rest_is_scored(dataset: Path) -> None:  # noqa: F811
    with SQLEnvironment(str(dataset), workers=1, timeout_s=3, backend="process") as env:
        first = env.worker_pids()
        thread, out = score_in_background(env, [RUNAWAY, RIGHT])
        time.sleep(0.5)
        os.kill(first[0], signal.SIGKILL)  # with its group
        second = wait_for_new_pid(env, first)
        time.sleep(0.5)  # the replacement runs the runaway alone
        os.kill(second[0], signal.SIGKILL)
        thread.join(timeout=30)
        (scores,) = out
        assert scores[0].metrics["status"] == "runtime_error" and not scores[0].correct
        assert "worker process died" in scores[0].metrics["error"]
        assert scores[0].metrics["sql"].startswith("WITH RECURSIVE")
        assert scores[1].correct and scores[1].reward == 1.0
        assert env.worker_restarts == 2


def test_an_error_in_a_worker_reaches_the_caller_as_itself(dataset: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / "gone"
    shutil.copytree(dataset, folder)
    env = SQLEnvironment(str(folder), backend="process")
    env.example_ids("dev")
    shutil.rmtree(folder)  # the workers start after this: they cannot open the dataset
    with pytest.raises(ValueError, match="unknown dataset .*gone"):
        env.score("q1", [RIGHT])
    env.close()
