"""The launcher contract, run against every backend (local slots; Kubernetes Jobs with marker k8s)."""

from __future__ import annotations

import time

import pytest

from cluster.base import TERMINAL, LauncherError, wait
from tests.cluster.conftest import Backend, fake_spec

TIMEOUT_S = 60


def wait_for(predicate, timeout_s: float = TIMEOUT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_trials_run_in_parallel_and_succeed(backend: Backend) -> None:
    launcher = backend.make()
    # Long enough that both pods are Running at once on a loaded 2-core machine (pod start ~1-3 s there).
    handles = [launcher.submit(fake_spec(f"t{i}", sleep=4)) for i in range(2)]
    wait_for(lambda: all(launcher.status(h) == "running" for h in handles), what="both trials running")
    statuses = wait(launcher, handles, timeout_s=TIMEOUT_S)
    assert set(statuses.values()) == {"succeeded"}
    results = [launcher.result(h) for h in handles]
    assert [r["trial_id"] for r in results] == ["t0", "t1"]
    assert all(r["status"] == "succeeded" and r["metrics"]["dev_accuracy_after"] == 0.5 for r in results)
    assert "step 1/1" in launcher.logs(handles[0])


def test_a_crashing_trial_is_failed_with_its_error_and_log_tail(backend: Backend) -> None:
    launcher = backend.make()
    handle = launcher.submit(fake_spec("t-crash", mode="raise"))
    assert wait(launcher, [handle], timeout_s=TIMEOUT_S)[handle] == "failed"
    result = launcher.result(handle)
    assert result["status"] == "failed" and result["error"]["kind"] == "crash"
    assert "ValueError: fake trial: learning rate exploded" in result["error"]["message"]
    assert "Traceback" in result["error"]["log_tail"]
    assert "learning rate exploded" in launcher.logs(handle)


def test_a_result_written_by_the_runner_is_kept(backend: Backend) -> None:
    launcher = backend.make()
    handle = launcher.submit(fake_spec("t-bad", mode="fail_result"))
    assert wait(launcher, [handle], timeout_s=TIMEOUT_S)[handle] == "failed"
    assert launcher.result(handle)["error"]["kind"] == "bad_spec"


def test_cancel_stops_a_running_trial(backend: Backend) -> None:
    launcher = backend.make()
    handle = launcher.submit(fake_spec("t-long", sleep=120))
    wait_for(lambda: launcher.status(handle) == "running", what="trial running")
    launcher.cancel(handle)
    assert launcher.status(handle) == "cancelled"
    wait_for(lambda: backend.gone(handle), what="trial process/Job gone")
    assert launcher.status(handle) == "cancelled"
    assert launcher.result(handle) is None  # a cancelled trial has no outcome


def test_a_new_launcher_reattaches_to_running_and_finished_trials(backend: Backend) -> None:
    first = backend.make()
    done = first.submit(fake_spec("t-done"))
    assert wait(first, [done], timeout_s=TIMEOUT_S)[done] == "succeeded"
    running = first.submit(fake_spec("t-run", sleep=3))
    wait_for(lambda: first.status(running) == "running", what="trial running")
    first = None  # the agent process restarts: nothing of the first launcher survives

    second = backend.make()
    handles = second.reattach("s-test")
    assert sorted(h.trial_id for h in handles) == ["t-done", "t-run"]
    by_id = {h.trial_id: h for h in handles}
    assert second.status(by_id["t-done"]) == "succeeded"
    assert second.status(by_id["t-run"]) in ("running", "succeeded")
    assert wait(second, [by_id["t-run"]], timeout_s=TIMEOUT_S)[by_id["t-run"]] == "succeeded"
    assert second.result(by_id["t-run"])["trial_id"] == "t-run"
    assert second.reattach("s-unknown") == []


def test_result_is_none_until_terminal(backend: Backend) -> None:
    launcher = backend.make()
    handle = launcher.submit(fake_spec("t-wait", sleep=2))
    assert launcher.status(handle) not in TERMINAL
    assert launcher.result(handle) is None
    wait(launcher, [handle], timeout_s=TIMEOUT_S)
    assert launcher.result(handle) is not None


@pytest.mark.parametrize("bad", [{"trial_id": "t1"}, {"trial_id": "a b", "session": "s"},
                                 {"trial_id": "-x", "session": "s"}])
def test_submit_rejects_a_spec_without_a_usable_identity(backend: Backend, bad: dict) -> None:
    with pytest.raises(LauncherError, match="trial_id|session"):
        backend.make().submit(bad)
