"""One winner rule (rl_core.stats.decide) behind the test-split confirmation (agent/confirm.py), the
dev verdict of the report (agent/report/verdict.py) and the A/A check (rl_core.stats.aa_false_winner_rate)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agent.confirm import build_verdict
from agent.report.files import TrialFiles
from agent.report.verdict import dev_verdict
from rl_core.stats import accuracy, decide, paired, winners


def _row(tid: str, dev: float) -> dict:
    return {"trial_id": tid, "dev_accuracy_after": dev, "gain": 0.0, "gain_stderr": 0.01}


def _dev_session(base: dict[str, bool], trials: dict[str, dict[str, bool]]) -> tuple[list, list]:
    """The report's inputs: each trial evaluated on dev from the base (step 0) and after training."""
    files = [TrialFiles(tid, Path(tid), spec={}, evals=[{"step": 0, "outcomes": base}, {"step": 20, "outcomes": o}])
             for tid, o in trials.items()]
    tree = [{"trial_id": tid, "accuracy": accuracy(o)[0]} for tid, o in trials.items()]
    return tree, files


def _fixes(base: dict[str, bool], k: int) -> dict[str, bool]:
    wrong = [q for q, v in base.items() if not v][:k]
    return {**base, **{q: True for q in wrong}}


def test_four_fixed_none_broken_is_no_winner_for_the_confirmation_the_report_or_the_aa_check():
    base = {f"q{i}": i % 2 == 0 for i in range(400)}
    four = _fixes(base, 4)  # paired z = 2.008, exact one-sided sign test p = 1/16
    confirm = build_verdict([_row("t0001", 0.6)], {"base": base, "t0001": four})
    assert confirm["trials"][0]["p_holm"] == pytest.approx(1 / 16)
    assert not confirm["trials"][0]["beats_base"] and not confirm["holds"]
    dev = dev_verdict(*_dev_session(base, {"t0001": four}))
    assert not dev["beats_base"] and dev["winners_dev"] == []
    assert winners({"t0001": paired(base, four)}) == set()


def test_the_confirmation_and_the_report_decide_as_the_rule_does():
    """Random sessions of 1-4 trials, some better than the base, some not: both consumers name
    exactly the winners `decide` names, with its Holm-adjusted p-values."""
    rng = random.Random(0)
    seen = set()
    for _ in range(150):
        n = rng.choice([60, 200, 400])
        base = {f"q{i}": rng.random() < 0.45 for i in range(n)}
        trials = {}
        for t in range(rng.randint(1, 4)):
            fix, brk = rng.choice([0.0, 0.05, 0.15]), rng.choice([0.0, 0.03])
            trials[f"t{t:04d}"] = {q: (rng.random() < fix) if not v else (rng.random() >= brk)
                                   for q, v in base.items()}
        expected = decide({tid: paired(base, o) for tid, o in trials.items()})
        rows = [_row(tid, accuracy(o)[0]) for tid, o in trials.items()]
        confirm = build_verdict(rows, {"base": base, **trials})
        for t in confirm["trials"]:
            assert t["beats_base"] == expected[t["trial_id"]].beats
            assert t["p_holm"] == pytest.approx(expected[t["trial_id"]].p_holm)
        dev = dev_verdict(*_dev_session(base, trials))
        assert dev["winners_dev"] == sorted(tid for tid, d in expected.items() if d.beats)
        seen.update(d.beats for d in expected.values())
    assert seen == {True, False}  # both outcomes were exercised
