"""rl_core.stats against hand-computed examples, and the decision rule's false-winner rate (A/A)."""

import json
import math
from pathlib import Path

import pytest

from rl_core.stats import (
    ALPHA_2SE,
    Paired,
    aa_false_winner_rate,
    accuracy,
    beats,
    binomial_se,
    decide,
    holm,
    mcnemar_exact,
    paired,
    sign_test,
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


def _fixes(base: dict[str, bool], k: int) -> dict[str, bool]:
    """base with its first k wrong questions answered right, nothing broken."""
    out, wrong = dict(base), [q for q, v in base.items() if not v]
    for q in wrong[:k]:
        out[q] = True
    return out


@pytest.mark.parametrize("n", [20, 100, 400, 4000])
def test_four_fixed_none_broken_is_no_winner_at_any_n(n):
    # The paired z of 4 fixed, 0 broken grows past 2 with n (2.008 at n = 400), but only 4 questions
    # differ: a fair coin gives 4 of 4 one way with p = 1/16. The exact sign test decides.
    base = {f"q{i}": i % 2 == 0 for i in range(n)}
    slight = paired(base, _fixes(base, 4))
    assert slight.p_sign == pytest.approx(1 / 16)
    assert winners({"slight": slight}) == set()


def test_winner_needs_the_exact_sign_test_after_holm_and_two_paired_standard_errors():
    base = {f"q{i}": i % 2 == 0 for i in range(400)}
    six = paired(base, _fixes(base, 6))  # the fewest all-one-way questions that pass alone: p = 1/64
    assert six.p_sign == pytest.approx(1 / 64) and six.z > 2
    assert winners({"six": six}) == {"six"}
    same = paired(base, dict(base))
    # Compared alongside one more trial, Holm doubles 1/64 past the 2-SE level (0.0228).
    assert winners({"six": six, "same": same}) == set()
    better = paired(base, _fixes(base, 30))
    assert winners({"better": better, "same": same}) == {"better"}
    worse = paired(_fixes(base, 30), base)
    assert worse.p_sign == pytest.approx(1.0) and winners({"worse": worse}) == set()


def test_sign_test_by_hand():
    assert sign_test(4, 0) == pytest.approx(1 / 16)
    assert sign_test(3, 1) == pytest.approx((4 + 1) / 16)  # P(X >= 3), X ~ Bin(4, 1/2)
    assert sign_test(0, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(15, 5) == pytest.approx(0.020695, abs=1e-6)  # scipy.stats.binomtest(15, 20, alternative="greater")


def test_decide_reports_the_holm_adjusted_exact_p_it_decides_on():
    base = {f"q{i}": i % 2 == 0 for i in range(400)}
    d = decide({"six": paired(base, _fixes(base, 6)), "four": paired(base, _fixes(base, 4))})
    # Holm: the smaller p times 2, then the larger times 1 (never below the one before it).
    assert d["six"].p_holm == pytest.approx(2 / 64) and d["four"].p_holm == pytest.approx(1 / 16)
    assert not d["six"].beats and not d["four"].beats


def test_the_two_se_floor_and_the_sign_are_required_beside_the_p_value():
    # Hand-built readings the exact test alone would pass: the floor and the sign still say no.
    assert beats(Paired(400, 0.03, 0.015, 12, 0, 0.0), p_holm=0.001)
    assert not beats(Paired(400, 0.01, 0.01, 12, 0, 0.0), p_holm=0.001)  # 1 SE: below the floor
    assert not beats(Paired(400, -0.03, 0.015, 12, 0, 0.0), p_holm=0.001)
    assert not beats(Paired(400, 0.03, 0.015, 12, 0, 0.0), p_holm=ALPHA_2SE)


@pytest.mark.parametrize("n", [20, 60, 400])
def test_the_exact_test_implies_the_two_se_floor(n):
    """Every count of fixed and broken questions (up to 60 discordant) the exact test passes alone
    also has a paired difference of at least 2 SE: the floor is what users read, not a second gate."""
    base = {f"q{i}": False for i in range(n)}
    for m in range(1, min(n, 60) + 1):
        for b_only in range(m + 1):
            if sign_test(b_only, m - b_only) < ALPHA_2SE:
                a = {**base, **{f"q{i}": True for i in range(b_only, m)}}
                b = {**base, **{f"q{i}": True for i in range(b_only)}}
                cmp = paired(a, b)
                assert (cmp.b_only, cmp.a_only) == (b_only, m - b_only)
                assert cmp.z >= 2 and cmp.diff > 0, (n, b_only, m - b_only, cmp.z)


def test_aa_decision_rule_rarely_names_a_winner():
    """Per-question rates measured in a real A/A session (examples/aa.toml: four trials of one
    configuration on tiny-gemma, 400 dev questions; benchmarks/aa_false_winners.py --save-rates):
    with the base and the trials all drawn from them, at most 5% of sessions name a winner."""
    rates = json.loads((Path(__file__).parents[1] / "fixtures" / "aa_dev_rates.json").read_text())
    assert len(rates) == 400 and sum(0 < r < 1 for r in rates) > 50  # identical configs do disagree
    rate = aa_false_winner_rate(rates, trials=4, sessions=400)
    assert rate <= 0.05, rate
    assert ALPHA_2SE == pytest.approx(0.02275, abs=1e-5)
