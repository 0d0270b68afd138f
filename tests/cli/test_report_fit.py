"""The report fits the terminal: leaderboard rows of at most two lines at 80, 100 and 160 columns,
and `report --trial ID` shows one trial whole."""

from __future__ import annotations

import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agent.cli import app, common
from agent.report import build_report, render_terminal
from agent.report.terminal import leaderboard_table
from agent.report.trial_view import _lineage
from tests.cli.session_builder import SessionBuilder

LONG = ("start from best trial t0001 (score 0.470); KL reached 0.59 in t0000 (unstable): halve the learning "
        "rate and raise kl_beta, and keep the reward weights that fixed the syntax errors")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    b = SessionBuilder(tmp_path_factory.mktemp("runs"))
    b.trial("t0000", after=0.62, hparams={"learning_rate": 1.3e-4, "temperature": 1.0, "max_steps": 100},
            rationale=LONG)
    b.trial("t0001", after=0.48, hparams={"learning_rate": 3e-4, "lora_rank": 16, "kl_beta": 0.04},
            rationale="TPE sample from 0 finished trial(s): Optuna picks every parameter (random until enough "
                      "trials are in)")
    b.trial("t0002", hparams={"learning_rate": 8e-4}, round_=2,
            error={"kind": "nan_loss", "message": "loss is nan at step 3 " * 4})
    tdir = b.dir / "trials" / "t0000"
    samples = [{"step": 4, "example_id": "dev-1", "question": "How many flights left Oslo in May?",
                "completion": "SELECT COUNT(*) FROM flight", "sql": "SELECT COUNT(*) FROM flight",
                "status": "wrong_result", "correct": False, "reward": 0.0, "error": None},
               {"step": 4, "example_id": "dev-2", "question": "List the airlines", "completion": "SELEC name",
                "sql": "SELEC name", "status": "syntax_error", "correct": False, "reward": 0.0,
                "error": "Parser Error: syntax error at or near SELEC"},
               {"step": 5, "example_id": "dev-3", "question": "Count the airports", "completion": "ok",
                "sql": "SELECT COUNT(*) FROM airport", "status": "ok", "correct": True, "reward": 1.0, "error": None}]
    (tdir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return b.dir


def _body_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"}) + 1
    return [line for line in lines[start:] if line.strip()]


@pytest.mark.parametrize("width", [80, 100, 160])
def test_leaderboard_rows_take_at_most_two_lines_and_fit_the_width(session, width):
    rows = build_report(session)["leaderboard"]
    console = Console(width=width, record=True)
    console.print(leaderboard_table(rows))
    text = console.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    body = _body_lines(text)
    assert len(body) <= 2 * len(rows)
    for r in rows:  # each trial's figures stay whole on its first line
        first = next(line for line in body if r["trial_id"] in line[:12])
        assert r["status"] in first and (r["accuracy"] is None or f"{100 * r['accuracy']:.1f}%" in first)
    if width >= 100:
        assert "+22.0 ± 3.4" in text and "20/20" in text and "exec 1" in text
    if width == 160:
        assert "lr=3e-4 rank=16 kl=0.04" in text and "parameter (random until enough trials are in)" in text
        assert "start from best trial t0001 (score 0.470); KL reached 0.59" in text


def test_the_whole_report_keeps_leaderboard_rows_within_two_lines_at_100_columns(session):
    console = Console(width=100, record=True)
    render_terminal(build_report(session), console)
    text = console.export_text()
    table = text[text.index("Leaderboard"):text.index("╭─ Best trial")]
    assert len(_body_lines(table)) <= 2 * 3
    assert LONG in text.replace("\n", " ").replace("  ", " ") or "halve the learning" in text  # Rounds: in full


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setattr(common.console, "width", 120)
    monkeypatch.setattr(common.err_console, "width", 120)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_report_trial_shows_spec_rationale_curves_wrong_sql_and_lineage(session, cli):
    result = cli("report", str(session), "--trial", "t0000")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Trial t0000" in out and "succeeded" in out and "62.0%" in out
    assert "halve the learning rate and raise kl_beta, and keep the reward weights" in " ".join(out.split())
    assert "learning_rate=1.3e-4" in out and "max_steps=20 max_seconds=480" in out  # the spec
    assert "reward_mean" in out and "▁" in out and "40.0 → 62.0" in out  # sparklines and the eval path
    assert "SELEC name" in out and "syntax_error: Parser Error" in out and "wrong_result" in out
    assert "SELECT COUNT(*) FROM airport" not in out  # only wrong SQL
    assert "2 wrong, 3 samples" in out and "lineage: from the base policy" in out


def test_report_trial_as_json_and_mistakes_are_one_line(session, cli):
    result = cli("report", str(session), "--trial", "t0002", "--format", "json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["row"]["error"]["kind"] == "nan_loss" and facts["spec"]["hparams"]["learning_rate"] == 8e-4
    missing = cli("report", str(session), "--trial", "t0042")
    assert missing.exit_code == 1 and "no trial 't0042'" in missing.output and "t0000, t0001, t0002" in missing.output
    assert "Traceback" not in missing.output
    markdown = cli("report", str(session), "--trial", "t0000", "--format", "markdown")
    assert markdown.exit_code == 1 and "not markdown" in markdown.output


def test_lineage_walks_parents_and_lists_children():
    rows = {"t0000": {}, "t0001": {"parent": "t0000"}, "t0002": {"parent": "t0001"}, "t0003": {"parent": "t0001"}}
    assert _lineage("t0002", rows) == {"ancestors": ["t0001", "t0000"], "children": []}
    assert _lineage("t0001", rows) == {"ancestors": ["t0000"], "children": ["t0002", "t0003"]}
    looped = {"a": {"parent": "b"}, "b": {"parent": "a"}}
    assert _lineage("a", looped)["ancestors"] == ["b"]  # a corrupt loop ends, never hangs
