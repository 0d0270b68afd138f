"""LocalLauncher specifics: slots and queueing, thread env, crash classification, wall limit, pid reuse."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from cluster.base import wait
from cluster.local import LocalLauncher, build_command, default_slots, default_wall_s
from tests.cluster.conftest import fake_command, fake_spec
from tests.cluster.test_conformance import wait_for


def launcher(tmp_path: Path, **kw) -> LocalLauncher:
    kw = {"slots": 2, "threads_per_trial": 1, "command": fake_command, **kw}
    return LocalLauncher(runs_dir=tmp_path / "runs", **kw)


def test_build_command_is_the_trial_runner_on_the_trial_dir(tmp_path: Path) -> None:
    cmd = build_command(fake_spec("t1"), tmp_path / "t1")
    assert cmd == [sys.executable, "-m", "rl_core.trial", str(tmp_path / "t1" / "launch_spec.json"),
                   "--out", str(tmp_path / "t1")]


def test_defaults_come_from_cores_and_budget() -> None:
    assert [default_slots(n) for n in (1, 2, 4, 8, 16)] == [1, 2, 4, 4, 8]
    assert default_wall_s({"budget": {"max_seconds": 100}}) == 600
    assert default_wall_s({"budget": {"max_steps": 5, "max_seconds": None}}) is None


def test_trials_beyond_the_slots_queue_and_start_in_order(tmp_path: Path) -> None:
    la = launcher(tmp_path, slots=1)
    handles = [la.submit(fake_spec(f"t{i}", sleep=0.5)) for i in range(3)]
    assert [la.status(h) for h in handles] == ["running", "queued", "queued"]
    statuses = wait(la, handles, timeout_s=30)
    assert set(statuses.values()) == {"succeeded"}
    spans = [la.result(h)["metrics"] for h in handles]
    # One slot: each trial starts after the previous one finished.
    assert spans[0]["finished_at"] <= spans[1]["started_at"] and spans[1]["finished_at"] <= spans[2]["started_at"]


def test_threads_env_and_own_process_group(tmp_path: Path) -> None:
    la = launcher(tmp_path, threads_per_trial=3)
    handle = la.submit(fake_spec("t1", sleep=0.5))
    state = json.loads((Path(handle.ref) / "launcher.json").read_text())
    assert os.getpgid(state["pid"]) == state["pid"]  # leader of its own group: cancel can kill it all
    wait(la, [handle], timeout_s=30)
    assert la.result(handle)["metrics"]["threads"] == "3"
    assert state["threads"] == 3 and state["start_ticks"] > 0


@pytest.mark.parametrize(("mode", "kind", "words"), [
    ("segv", "crash", "SIGSEGV"),
    ("sigkill", "oom", "SIGKILL"),
    ("oom", "oom", "out of memory"),
    ("exit0", "crash", "without writing result.json"),
])
def test_deaths_are_failed_with_a_classified_error(tmp_path: Path, mode: str, kind: str, words: str) -> None:
    la = launcher(tmp_path)
    handle = la.submit(fake_spec("t1", mode=mode))
    assert wait(la, [handle], timeout_s=30)[handle] == "failed"
    result = json.loads((Path(handle.ref) / "result.json").read_text())
    assert result["status"] == "failed" and result["error"]["kind"] == kind
    assert words in result["error"]["message"]
    assert "fake trial t1" in result["error"]["log_tail"]
    # The launcher carries on after a death.
    ok = la.submit(fake_spec("t2"))
    assert wait(la, [ok], timeout_s=30)[ok] == "succeeded"


def test_wall_time_limit_kills_the_group_and_reports_timeout(tmp_path: Path) -> None:
    la = launcher(tmp_path, wall_s=0.5, kill_grace_s=1.0)
    handle = la.submit(fake_spec("t1", sleep=60))
    assert wait(la, [handle], timeout_s=30)[handle] == "failed"
    assert la.result(handle)["error"]["kind"] == "timeout"


def test_a_missing_executable_is_a_failed_trial(tmp_path: Path) -> None:
    la = launcher(tmp_path, command=lambda spec, d: ["/nonexistent/python", "-m", "rl_core.trial"])
    handle = la.submit(fake_spec("t1"))
    assert la.status(handle) == "failed"
    assert "exited with code 127" in la.result(handle)["error"]["message"]
    assert "cannot start" in la.logs(handle)


def test_resubmitting_a_known_trial_does_not_rerun_it(tmp_path: Path) -> None:
    la = launcher(tmp_path)
    handle = la.submit(fake_spec("t1"))
    wait(la, [handle], timeout_s=30)
    again = launcher(tmp_path).submit(fake_spec("t1"))
    assert again == handle
    assert (Path(handle.ref) / "trial.log").read_text().count("fake trial t1") == 1


def test_queued_trials_of_a_dead_launcher_are_started_by_the_next(tmp_path: Path) -> None:
    first = launcher(tmp_path, slots=1)
    handles = [first.submit(fake_spec(f"t{i}", sleep=0.3)) for i in range(2)]
    assert first.status(handles[1]) == "queued"
    del first
    second = launcher(tmp_path, slots=1)
    assert sorted(h.trial_id for h in second.reattach("s-test")) == ["t0", "t1"]
    assert set(wait(second, handles, timeout_s=30).values()) == {"succeeded"}


def test_a_reused_pid_is_not_mistaken_for_the_trial(tmp_path: Path) -> None:
    la = launcher(tmp_path)
    handle = la.submit(fake_spec("t1", sleep=30))
    state_path = Path(handle.ref) / "launcher.json"
    state = json.loads(state_path.read_text())
    # Simulate: the launcher died, the trial died unobserved, its pid now belongs to another process
    # (this test's own pid, which is alive but started at a different time).
    la.cancel(handle)
    state.update(state="running", pid=os.getpid())
    state_path.write_text(json.dumps(state))
    (Path(handle.ref) / "result.json").unlink(missing_ok=True)
    fresh = launcher(tmp_path)
    [adopted] = fresh.reattach("s-test")
    assert fresh.status(adopted) == "lost"
    assert "no launcher was watching" in fresh.result(adopted)["error"]["message"]


def test_an_adopted_trial_can_be_cancelled(tmp_path: Path) -> None:
    handle = launcher(tmp_path).submit(fake_spec("t1", sleep=60))
    fresh = launcher(tmp_path)
    [adopted] = fresh.reattach("s-test")
    assert fresh.status(adopted) == "running"
    fresh.cancel(adopted)
    state = json.loads((Path(handle.ref) / "launcher.json").read_text())
    wait_for(lambda: not Path(f"/proc/{state['pid']}").exists() or
             Path(f"/proc/{state['pid']}/stat").read_text().split(") ")[1][0] == "Z", what="process gone")
    assert fresh.status(adopted) == "cancelled"


def test_a_result_written_while_being_cancelled_is_set_aside(tmp_path: Path) -> None:
    la = launcher(tmp_path)
    handle = la.submit(fake_spec("t1", sleep=60))
    wait_for(lambda: "fake trial t1" in la.logs(handle), what="trial started")
    la.cancel(handle)
    trial_dir = Path(handle.ref)
    assert not (trial_dir / "result.json").exists()
    assert json.loads((trial_dir / "result.cancelled.json").read_text())["error"]["kind"] == "timeout"
    assert la.status(handle) == "cancelled" and la.result(handle) is None
