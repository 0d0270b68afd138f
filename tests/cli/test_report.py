"""The report's facts and their three forms, on contract-shaped sessions with known numbers."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from agent.report import build_report, render_markdown, render_terminal, write_plot
from agent.report.format import sparkline
from tests.cli.session_builder import SessionBuilder


@pytest.fixture(scope="module")
def clear_win(tmp_path_factory):
    # Built once: the tests below only read it.
    b = SessionBuilder(tmp_path_factory.mktemp("runs"))
    b.trial("t0000", after=0.62, hparams={"learning_rate": 1e-4}, rationale="baseline recipe")
    b.trial("t0001", after=0.48, hparams={"learning_rate": 3e-4, "lora_rank": 16}, rationale="higher lr")
    b.trial("t0002", after=0.41, hparams={"learning_rate": 1e-3}, round_=2, rationale="probe the edge")
    b.trial(
        "t0003",
        hparams={"learning_rate": 8e-4},
        round_=2,
        error={"kind": "nan_loss", "message": "loss is nan at step 3"},
    )
    b.trial("t0004", after=0.55, hparams={"learning_rate": 5e-5, "lora_rank": 8}, round_=2)
    return b.dir


def test_leaderboard_ranks_by_dev_accuracy_and_puts_failures_last(clear_win):
    facts = build_report(clear_win)
    rows = facts["leaderboard"]
    assert [r["trial_id"] for r in rows] == ["t0000", "t0004", "t0001", "t0002", "t0003"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, None]
    top = rows[0]
    assert top["gain"] == pytest.approx(0.22)
    # two independent 400-item evals: sqrt(se_before^2 + se_after^2)
    assert top["gain_stderr"] == pytest.approx(((0.4 * 0.6 + 0.62 * 0.38) / 400) ** 0.5)
    assert top["params"] == {"learning_rate": 1e-4, "lora_rank": 0}
    assert top["reward"] == "exec 1"
    assert rows[-1]["error"]["kind"] == "nan_loss"


def test_best_trial_has_config_adapter_and_reproduce_command(clear_win):
    best = build_report(clear_win)["best"]
    assert best["trial_id"] == "t0000"
    assert best["spec"]["hparams"]["learning_rate"] == 1e-4
    assert best["adapter_path"] == str((clear_win / "trials/t0000/adapter").resolve())
    assert best["adapter_exists"]
    assert best["reproduce"].startswith(
        f"openrl-agent trial run {clear_win / 'trials/t0000/spec.json'} --out "
    )


def test_verdict_says_when_the_gain_is_real(clear_win):
    verdict = build_report(clear_win)["verdict"]
    assert verdict["beats_base"] and verdict["source"] == "dev"
    assert verdict["text"].startswith("t0000: dev 62.0% vs the base's 40.0% (n=400), +22.0 ± 2.7 points paired: "
                                      "beats the base on dev after Holm's correction over 4 trials")
    assert "not confirmed on the sealed test split" in verdict["text"]
    assert verdict["winners_dev"] == ["t0000", "t0001", "t0004"]  # t0004 +15, t0001 +8; t0002 +1 is noise


def test_verdict_says_plainly_when_no_trial_beats_noise(tmp_path):
    b = SessionBuilder(tmp_path)
    b.trial("t0000", before=0.50, after=0.52, n=200)  # +2 points, se ~5 points
    b.trial("t0001", before=0.50, after=0.47, n=200)
    facts = build_report(b.dir)
    assert not facts["verdict"]["beats_base"]
    assert facts["verdict"]["text"].startswith("t0000: dev 52.0% vs the base's 50.0% (n=200), +2.0 ± 2.8 points")
    assert "not a significant gain over the base on dev (2 paired SE after Holm)" in facts["verdict"]["text"]


def test_rounds_failures_importances_and_curves(clear_win):
    facts = build_report(clear_win)
    r1, r2 = facts["rounds"]
    assert (r1["round"], r1["planner"], r1["trials"], r1["best_trial"]) == (
        1,
        "offline",
        ["t0000", "t0001"],
        "t0000",
    )
    assert r1["rationales"] == {"t0000": "baseline recipe", "t0001": "higher lr"}
    assert (r2["succeeded"], r2["failed"], r2["best_trial"]) == (2, 1, "t0004")
    assert r2["mean_accuracy"] == pytest.approx((0.41 + 0.55) / 2)
    assert facts["failures"] == [
        {"trial_id": "t0003", "round": 2, "kind": "nan_loss", "message": "loss is nan at step 3"}
    ]
    imp = facts["importances"]
    assert imp["n_trials"] == 4 and {"learning_rate", "lora_rank"} <= set(imp["params"])
    assert sum(imp["params"].values()) == pytest.approx(1.0, abs=1e-3)
    assert facts["curves"]["t0000"]["reward_mean"][0] == pytest.approx(0.32)
    assert [b["best"] for b in facts["best_so_far"]] == [0.62, 0.62, 0.62, 0.62]


def test_importances_wait_for_enough_trials(tmp_path):
    b = SessionBuilder(tmp_path)
    b.trial("t0000", hparams={"learning_rate": 1e-4})
    b.trial("t0001", hparams={"learning_rate": 3e-4})
    imp = build_report(b.dir)["importances"]
    assert imp["params"] == {} and "needs at least 4 finished trials, have 2" in imp["note"]


def test_running_trial_with_half_written_metrics_line(tmp_path):
    b = SessionBuilder(tmp_path)
    tdir = b.trial("t0000", finished=False)
    with open(tdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 21, "reward_m')
    facts = build_report(b.dir)
    (row,) = facts["leaderboard"]
    assert row["status"] == "running" and row["steps"] == 20 and row["score"] is None
    assert facts["verdict"]["text"] == "No trial has finished successfully yet."
    assert facts["session"]["counts"]["running"] == 1


def test_markdown_and_json_carry_the_same_facts(clear_win):
    facts = build_report(clear_win)
    md = render_markdown(facts)
    assert json.loads(json.dumps(facts)) == facts  # the JSON form is the facts themselves
    for needle in [
        "| 1 | t0000 | succeeded | 62.0% | +22.0 ± 3.4 |",
        "lr=1e-4 rank=0",
        "## Best trial t0000",
        facts["best"]["reproduce"],
        "| t0003 | 2 | nan_loss | loss is nan at step 3 |",
        "## Parameter importances",
        facts["verdict"]["text"],
        "probe the edge",
        "## Curves per step",
    ]:
        assert needle in md, needle


def test_terminal_form(clear_win):
    console = Console(record=True, width=200)
    render_terminal(build_report(clear_win), console)
    out = console.export_text()
    for needle in [
        "Leaderboard",
        "t0000",
        "62.0%",
        "+22.0 ± 3.4",
        "Best trial t0000",
        "reproduce:",
        "Failed trials",
        "nan_loss",
        "Parameter importances",
        "0.32→0.70",
        "40.0 → 62.0",
    ]:
        assert needle in out, needle


def test_plot_writes_png(clear_win, tmp_path):
    path = write_plot(build_report(clear_win), tmp_path / "out" / "report.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_sparkline_shape():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert len(sparkline(list(range(100)), width=24)) == 24
    assert sparkline([None, 0.5, 0.5]) == "▄▄"
    assert sparkline([]) == ""


def test_importances_say_so_when_every_trial_scored_the_same(tmp_path):
    b = SessionBuilder(tmp_path)
    for i, lr in enumerate((1e-4, 2e-4, 3e-4, 4e-4)):
        b.trial(f"t000{i}", after=0.40, hparams={"learning_rate": lr})
    imp = build_report(b.dir)["importances"]
    assert imp["params"] == {} and "every finished trial scored the same" in imp["note"]


def test_session_without_trials(tmp_path):
    facts = build_report(SessionBuilder(tmp_path).dir)
    assert facts["leaderboard"] == [] and facts["best"] is None
    assert render_markdown(facts).endswith("No trials yet.\n")
    console = Console(record=True, width=120)
    render_terminal(facts, console)
    assert console.export_text().rstrip().endswith("No trials yet.")


def test_trials_with_different_starting_policies(tmp_path):
    # An in-trial warm start (sft_steps) gives each trial its own base: gains are measured from it.
    b = SessionBuilder(tmp_path)
    b.trial("t0000", before=0.11, after=0.08, n=200)
    b.trial("t0001", before=0.15, after=0.25, n=200)
    facts = build_report(b.dir)
    assert (facts["base"]["low"], facts["base"]["high"]) == (0.11, 0.15)
    assert "11.0% to 15.0% dev execution accuracy (n=200)" in render_markdown(facts)
    # The base policy is the one fresh trials start from (t0000's step-0 evaluation here).
    assert facts["verdict"]["text"].startswith("t0001: dev 25.0% vs the base's 11.0% (n=200), +14.0 ± 2.6 points")
