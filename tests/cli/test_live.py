"""The live view fed the research loop's events, over a session directory the events refer to."""

from __future__ import annotations

from rich.console import Console

from agent.budget import trial_eta_s
from agent.cli.live import LiveView, plan_renderable
from tests.cli.session_builder import SessionBuilder


def _render(console: Console, renderable) -> str:
    with console.capture() as cap:
        console.print(renderable)
    return cap.get()


def test_events_drive_running_table_leaderboard_and_log(tmp_path):
    b = SessionBuilder(tmp_path)
    console = Console(record=True, width=160)
    view = LiveView(b.dir, console)
    view.on_event(
        {
            "type": "round",
            "round": 1,
            "proposals": [
                {
                    "trial_id": "t0000",
                    "params": {"learning_rate": 1e-4},
                    "rationale": "the calibrated recipe",
                },
                {"trial_id": "t0001", "params": {"learning_rate": 1e-3}, "rationale": "probe a higher rate"},
            ],
        }
    )
    view.on_event({"type": "trial_started", "trial_id": "t0000", "max_steps": 20})
    view.on_event(
        {
            "type": "trial_progress",
            "trial_id": "t0000",
            "step": 5,
            "max_steps": 20,
            "reward": 0.41,
            "eta_s": 95,
        }
    )
    running = _render(console, view)
    assert "t0000" in running and "5/20" in running and "0.41" in running and "1m35s" in running
    assert "Leaderboard" not in running

    b.trial("t0000", after=0.58, rationale="the calibrated recipe")
    view.on_event({"type": "trial_finished", "trial_id": "t0000", "status": "succeeded", "score": 0.58})
    after = _render(console, view)
    assert "no trial running" in after and "Leaderboard so far" in after and "58.0%" in after
    view.on_event({"type": "session_done", "reason": "all trials done"})
    assert view.done == {"type": "session_done", "reason": "all trials done"}

    log = console.export_text()
    assert "Round 1" in log and "probe a higher rate" in log and "lr=1e-4" in log
    assert "t0000 succeeded  dev 58.0% (Δ +18.0 ± 3.5 points)" in log
    view.on_event({"type": "something_new"})  # unknown events are ignored, not fatal


def test_plan_shows_values_with_their_source():
    from agent.goal import plan_goal

    plan = plan_goal("raise dev accuracy of micro-gemma, 4 trials, 2 at a time", {"planner": "offline"})
    out = _render(Console(width=160), plan_renderable(plan))
    assert "builtin:micro-gemma" in out and "learning_rate" in out
    trials_line = next(line for line in out.splitlines() if line.startswith("trials"))
    assert "4" in trials_line and "goal" in trials_line


def _running_trial(session_dir, max_steps: int, max_seconds: float | None, t_steps: list[float]) -> None:
    import json

    tdir = session_dir / "trials" / "t0000"
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "spec.json").write_text(json.dumps({"trial_id": "t0000", "budget": {
        "max_steps": max_steps, "max_seconds": max_seconds}}))
    lines = [{"step": i + 1, "reward_mean": 0.3, "t_step": t, "elapsed_s": 60 + 2 * i} for i, t in enumerate(t_steps)]
    (tdir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_the_view_shows_the_loops_one_eta(tmp_path):
    # The loop computes the ETA (agent.budget.trial_eta_s, tested there); the view shows it, counted
    # down, and no longer replaces it with an estimate of its own.
    _running_trial(tmp_path, max_steps=200, max_seconds=45, t_steps=[2.0] * 5)
    view = LiveView(tmp_path, Console(width=120))
    metrics = [{"step": i + 1, "t_step": 2.0} for i in range(5)]
    eta = trial_eta_s(metrics, {"max_steps": 200, "max_seconds": 45})
    view.on_event({"type": "trial_progress", "trial_id": "t0000", "step": 5, "max_steps": 200, "reward": 0.3,
                   "eta_s": eta})
    shown = _render(Console(width=120), view)
    assert eta == 35.0 and ("35s" in shown or "34s" in shown) and "6m50s" not in shown


def test_the_planner_wait_shows_as_a_line_and_in_the_view_until_the_round(tmp_path):
    console = Console(record=True, width=120)
    view = LiveView(tmp_path, console)
    view.on_event({"type": "planner_wait", "line": "asking gemini for round 2's 2 proposals (attempt 1 of 4, 0s of at most 60s)"})
    view.on_event({"type": "planner_wait", "line": "asking gemini for round 2's 2 proposals (attempt 2 of 4, 31s of at most 60s)"})
    shown = _render(Console(width=120), view)
    assert "planner: asking gemini for round 2's 2 proposals (attempt 2 of 4" in shown
    assert console.export_text().count("asking gemini") == 1  # one line in the log, the view updates in place
    view.on_event({"type": "round", "round": 2, "planner": "offline (fallback)", "fallback": "gemini failed: 4 attempts failed",
                   "proposals": []})
    assert "planner:" not in _render(Console(width=120), view)
    assert "fallback: gemini failed" in console.export_text()


def test_a_tracking_warning_is_a_dim_line_and_the_plan_names_the_trackers(tmp_path):
    console = Console(record=True, width=120, force_terminal=True)
    view = LiveView(tmp_path, console)
    view.on_event({"type": "tracking_warning", "message": "tracking: mlflow failed for t0001: MlflowException: down"})
    assert console.export_text(clear=False) == "  tracking: mlflow failed for t0001: MlflowException: down\n"
    assert "\x1b[2m" in console.export_text(styles=True)  # dim
    plan = {"goal": "g", "tracking": {"backends": ["tensorboard", "mlflow"]}, "planner": {"name": "offline"}}
    assert "tracking   tensorboard, mlflow" in _render(Console(width=120), plan_renderable(plan))
