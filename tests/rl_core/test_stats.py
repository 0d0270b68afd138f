"""rl_core.stats against hand-computed examples, and the decision rule's false-winner rate (A/A)."""

import json
import math
from pathlib import Path

import pytest

from rl_core.stats import (
    ALPHA_2SE,
    aa_false_winner_rate,
    accuracy,
    binomial_se,
    holm,
    mcnemar_exact,
    paired,
    winners,
)


def test_accuracy_and_binomial_se():
    assert accuracy([True, False, True, True]) == (0.75, pytest.approx(math.sqrt(0.75 * 0.25 / 4)), 4)
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(None, 10) is None and binomial_se(0.5, 0) is None


def test_paired_by_hand():
    # 10 questions: b fixes q1..q3, breaks q4; both right on q5..q7; both wrong on q8..q10.
    a = {f"q{i}": v for i, v in enumerate([0, 0, 0, 1, 1, 1, 1, 0, 0, 0], 1)}
    b = {f"q{i}": v for i, v in enumerate([1, 1, 1, 0, 1, 1, 1, 0, 0, 0], 1)}
    p = paired(a, b)
    # d = [1, 1, 1, -1, 0 x 6]: mean 0.2, sample variance (3 * 0.8^2 + 1.2^2 + 6 * 0.2^2) / 9 = 0.4
    assert p.n == 10 and p.diff == pytest.approx(0.2) and p.se == pytest.approx(math.sqrt(0.4 / 10))
    assert (p.b_only, p.a_only) == (3, 1)
    assert p.p_mcnemar == pytest.approx(2 * (1 + 4) / 16)  # 2 * P(Bin(4, .5) <= 1) = 0.625
    assert p.z == pytest.approx(0.2 / math.sqrt(0.04))
    # The independent-samples SE would be larger: pairing is what makes small gains visible.
    independent = math.hypot(binomial_se(0.4, 10), binomial_se(0.6, 10))
    assert p.se < independent


def test_paired_uses_only_common_questions_and_handles_ties():
    assert paired({"a": True}, {"b": True}).n == 0
    same = paired({"a": True, "b": False}, {"a": True, "b": False})
    assert same.diff == 0 and same.se == 0 and same.z == 0 and same.p_mcnemar == 1.0


def test_mcnemar_and_holm_by_hand():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3*0.01, max(2*0.03, .03), max(.04, .06)
    assert holm([0.5]) == [0.5]


def test_winner_needs_two_paired_standard_errors_after_holm():
    base = {f"q{i}": i % 2 == 0 for i in range(400)}
    better = dict(base)
    for i in range(1, 60, 2):  # fixes 30 questions, breaks none: z ~ 5.6
        better[f"q{i}"] = True
    slight = dict(base)
    for i in range(1, 8, 2):  # fixes 4 questions: z just above 2
        slight[f"q{i}"] = True
    same = dict(base)
    assert paired(base, slight).z == pytest.approx(2.0, abs=0.05)
    assert winners({"slight": paired(base, slight)}) == {"slight"}  # one comparison: 2 SE is enough
    # Compared alongside one more trial, the same gain is within what two tries give by chance.
    assert winners({"slight": paired(base, slight), "same": paired(base, same)}) == set()
    assert winners({"better": paired(base, better), "same": paired(base, same)}) == {"better"}


def test_aa_decision_rule_rarely_names_a_winner():
    """Per-question rates measured in a real A/A session (examples/aa.toml: four trials of one
    configuration on tiny-gemma, 400 dev questions; benchmarks/aa_false_winners.py --save-rates):
    with the base and the trials all drawn from them, at most 5% of sessions name a winner."""
    rates = json.loads((Path(__file__).parents[1] / "fixtures" / "aa_dev_rates.json").read_text())
    assert len(rates) == 400 and sum(0 < r < 1 for r in rates) > 50  # identical configs do disagree
    rate = aa_false_winner_rate(rates, trials=4, sessions=400)
    assert rate <= 0.05, rate
    assert ALPHA_2SE == pytest.approx(0.02275, abs=1e-5)
