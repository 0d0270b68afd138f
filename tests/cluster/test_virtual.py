"""VirtualLauncher: K simulated machines, trials really run one at a time (real fake-trial and
scripted-trial subprocesses), a discrete-event clock the session reads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from agent.api import create_session, plan_goal, run_session
from agent.confirm import run_confirmation
from cluster.base import wait
from cluster.virtual import HELD_DIR, VirtualClock, VirtualLauncher
from rl_core.sessiondir import clock_file, confirm_dir, confirm_job_dir
from rl_core.trialdir import read_jsonl, read_result
from tests.agent.support import scripted_command
from tests.cluster.conftest import fake_command, fake_spec


def launcher(tmp_path: Path, slots: int, **kw) -> VirtualLauncher:
    return VirtualLauncher(tmp_path / "runs", slots, command=fake_command, threads_per_trial=1, **kw)


def visible(handle) -> dict | None:
    """What any reader of the trial directory (the loop, the planner, the leaderboard) finds there."""
    return read_result(Path(handle.ref))


def test_the_clock_stands_still_while_stopped_and_jumps_forward_only() -> None:
    clock = VirtualClock()
    with clock.stopped():
        time.sleep(0.3)
    assert clock.now() < 0.2
    clock.advance_to(100.0)
    assert 100.0 <= clock.now() < 100.2
    clock.advance_to(50.0)
    assert clock.now() >= 100.0


def test_a_decision_sees_only_results_that_ended_by_its_time(tmp_path: Path) -> None:
    la = launcher(tmp_path, slots=2, max_jump_s=None)
    long = la.submit(fake_spec("long", sleep=1.5))
    time.sleep(0.2)  # the agent thinks: virtual time passes
    short = la.submit(fake_spec("short", sleep=0.2))
    assert la.status(short) == "succeeded"  # waiting for short: both run really, the clock jumps to its end
    assert set(la.real_order) == {"long", "short"}
    at = la.virtual_now()
    sched = {row["trial_id"]: row for row in la.schedule()}
    assert sched["short"]["end_v"] == pytest.approx(at, abs=0.05)
    assert sched["long"]["start_v"] + sched["long"]["run_s"] > at  # long really finished, virtually not yet
    assert visible(short)["status"] == "succeeded"
    assert visible(long) is None and la.result(long) is None
    assert not (Path(long.ref) / "trial.log").exists() and (Path(long.ref) / HELD_DIR / "result.json").exists()
    # a decision made now: a trial submitted at `at` starts at `at` on the slot short freed
    after = la.submit(fake_spec("after", sleep=0.1))
    assert la.status(long) == "running" or la.status(long) == "succeeded"
    statuses = wait(la, [long, after], timeout_s=30, interval_s=0.01)
    assert set(statuses.values()) == {"succeeded"}
    sched = {row["trial_id"]: row for row in la.schedule()}
    assert sched["after"]["start_v"] >= at
    assert sched["long"]["end_v"] == pytest.approx(sched["long"]["start_v"] + sched["long"]["run_s"])
    assert visible(long)["status"] == "succeeded" and not (Path(long.ref) / HELD_DIR).exists()
    assert la.virtual_now() >= max(sched["long"]["end_v"], sched["after"]["end_v"])


def test_k_trials_of_d_seconds_take_d_virtual_and_k_times_d_real_seconds(tmp_path: Path) -> None:
    la = launcher(tmp_path, slots=3)
    t0, v0 = time.monotonic(), la.virtual_now()
    handles = [la.submit(fake_spec(f"t{i}", sleep=0.8)) for i in range(3)]
    assert set(wait(la, handles, timeout_s=60, interval_s=0.01).values()) == {"succeeded"}
    real, virtual = time.monotonic() - t0, la.virtual_now() - v0
    runs = [row["run_s"] for row in la.schedule()]
    assert real >= sum(runs) >= 3 * 0.8
    assert max(runs) <= virtual < max(runs) + 0.5  # three machines: one trial's length, not three


def test_trials_run_really_in_order_of_virtual_start_and_wait_for_a_free_slot(tmp_path: Path) -> None:
    la = launcher(tmp_path, slots=2)
    handles = [la.submit(fake_spec("a", sleep=0.6)), la.submit(fake_spec("b", sleep=0.1)),
               la.submit(fake_spec("c", sleep=0.1))]
    assert [la.status(h) for h in handles][2] in ("queued", "running", "succeeded")
    wait(la, handles, timeout_s=60, interval_s=0.01)
    assert la.real_order == ["a", "b", "c"]
    sched = {row["trial_id"]: row for row in la.schedule()}
    assert sched["c"]["start_v"] == pytest.approx(sched["b"]["end_v"])  # c waited for b's slot, not a's
    spans = [la.result(h)["metrics"] for h in handles]
    assert spans[0]["finished_at"] <= spans[1]["started_at"] and spans[1]["finished_at"] <= spans[2]["started_at"]


def test_a_queued_trial_is_shown_queued_until_a_slot_frees(tmp_path: Path) -> None:
    la = launcher(tmp_path, slots=1, max_jump_s=None)
    first, second = la.submit(fake_spec("first", sleep=0.3)), la.submit(fake_spec("second", sleep=0.1))
    la.poll()
    assert la.real_order == ["first"]  # second has not started virtually: it has not run either
    assert {r["trial_id"]: r["state"] for r in la.schedule()} == {"first": "running", "second": "queued"}
    assert la.status(first) == "succeeded"
    sched = {r["trial_id"]: r for r in la.schedule()}
    assert sched["second"]["start_v"] == pytest.approx(sched["first"]["end_v"])
    assert la.status(second) == "succeeded" and la.real_order == ["first", "second"]


def test_a_running_trial_shows_the_lines_its_run_had_written_by_the_virtual_time(tmp_path: Path) -> None:
    la = launcher(tmp_path, slots=1, max_jump_s=None)
    handle = la.submit(fake_spec("streamer", mode="stream", steps=3, step_s=0.4))
    seen = []
    while la.status(handle) == "running":  # each wait stops at the next evaluation line, then the end
        seen.append(len(read_jsonl(Path(handle.ref) / "eval.jsonl")))
        assert visible(handle) is None
        elapsed = la.virtual_now() - la.schedule()[0]["start_v"]
        assert len(read_jsonl(Path(handle.ref) / "metrics.jsonl")) == seen[-1]  # written together
        assert elapsed < la.schedule()[0]["run_s"]
    assert seen == [1, 2, 3]
    assert visible(handle)["status"] == "succeeded" and len(read_jsonl(Path(handle.ref) / "eval.jsonl")) == 3


def test_cancel_frees_the_slot_at_once_and_the_run_stays_unseen(tmp_path: Path) -> None:
    la = launcher(tmp_path, slots=1, max_jump_s=0.05)
    doomed, waiting = la.submit(fake_spec("doomed", sleep=1.0)), la.submit(fake_spec("waiting", sleep=0.1))
    assert la.status(doomed) == "running"  # it ran really; the clock moved only 0.05 s
    at = la.virtual_now()
    la.cancel(doomed)
    assert la.status(doomed) == "cancelled" and la.result(doomed) is None and visible(doomed) is None
    assert (Path(doomed.ref) / "cancelled").exists() and not (Path(doomed.ref) / HELD_DIR).exists()
    wait(la, [waiting], timeout_s=30, interval_s=0.01)
    assert {r["trial_id"]: r for r in la.schedule()}["waiting"]["start_v"] == pytest.approx(at, abs=0.05)


def test_a_session_on_the_virtual_cluster_keeps_virtual_time(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("SCRIPTED_TRIAL", json.dumps({"step_s": 0.4, "steps": 3}))
    plan = plan_goal("raise dev accuracy, 6 trials, 3 at a time", {"planner": "offline", "budget_minutes": 2})
    session_dir = create_session(plan, tmp_path / "runs")
    la = VirtualLauncher(session_dir.parent, 3, command=scripted_command, threads_per_trial=1)
    t0 = time.monotonic()
    summary = run_session(session_dir, launcher=la, poll_s=0.05)
    real = time.monotonic() - t0
    assert summary["state"] == "done" and summary["finished"] == 6
    used = json.loads(clock_file(session_dir).read_text())["used_s"]
    runs = [row["run_s"] for row in la.schedule()]
    assert real >= sum(runs) >= 6 * 1.2
    # Six trials on three machines: about two trial lengths of virtual time, not six.
    assert 2 * min(runs) <= used < sum(runs) * 0.7
    assert used <= la.virtual_now()  # the launcher's clock, which also counts the session's start-up

    # The confirmation's deadline is on the same clock: three jobs of ~1.2 s on three machines fit in
    # 2.5 virtual seconds, though they take ~3.6 s really (a real-time deadline would cancel one).
    confirm_la = VirtualLauncher(confirm_dir(session_dir).parent, 3, clock=la.clock, command=scripted_command,
                                 threads_per_trial=1)
    v0 = la.virtual_now()
    verdict = run_confirmation(session_dir, plan, confirm_la, emit=lambda event: None, poll_s=0.01, timeout_s=2.5)
    assert sum(row["run_s"] for row in confirm_la.schedule()) > 2.5
    assert len(confirm_la.schedule()) == 3 and verdict["failed_jobs"] == []
    assert read_result(confirm_job_dir(session_dir, "base"))["status"] == "succeeded"  # where the verdict reads
    assert la.virtual_now() - v0 < 2.5
