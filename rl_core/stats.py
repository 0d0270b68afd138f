"""Statistics of evaluations, one owner: accuracy with its standard error, and paired comparisons
of two policies on the same questions. Torch-free; the trial runner, the loop and the report use it.

Two evaluations of different policies on the *same* questions are not independent: most questions
are answered the same way by both, so the standard error of the difference is the standard error
of the per-question differences, sd(d)/sqrt(n), usually far below sqrt(se_a^2 + se_b^2). McNemar's
exact test uses only the discordant questions.

The winner rule (`decide`, the one the confirmation, the report and the A/A check all call): across
m trials compared with one base, a trial "beats" it when
- the Holm-corrected EXACT one-sided sign-test p-value of its discordant questions (fixed vs broken,
  each a fair coin under no difference) is below the level of 2 standard errors (0.0228),
- its paired difference is at least 2 paired standard errors (the effect-size floor), and
- the difference is positive.
The exact test is what decides when few questions differ: 4 fixed and 0 broken has a paired z of
2.0 at n = 400 (a normal approximation calls it a winner at any n), but a fair coin gives 4 of 4 one
way with p = 1/16. The 2-SE floor is implied by the exact test in every case we found (a test
checks it over all counts up to 60 discordant questions); it stays as the reading users are shown.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ALPHA_2SE = 0.5 * math.erfc(2 / math.sqrt(2))  # one-sided p at z = 2: 0.02275
MIN_Z = 2.0  # the effect-size floor: a winner's paired difference is at least this many paired SE


def binomial_se(p: float | None, n: int | None) -> float | None:
    """Standard error of an accuracy p measured on n questions."""
    if p is None or not n:
        return None
    return math.sqrt(max(p * (1 - p), 0.0) / n)


def accuracy(outcomes: Sequence[bool] | Mapping[str, bool]) -> tuple[float, float, int]:
    """(accuracy, standard error, n) of per-question outcomes."""
    values = list(outcomes.values()) if isinstance(outcomes, Mapping) else list(outcomes)
    n = len(values)
    if n == 0:
        return 0.0, 0.0, 0
    p = sum(bool(v) for v in values) / n
    return p, binomial_se(p, n) or 0.0, n


@dataclass(frozen=True)
class Paired:
    """b minus a on the questions both answered: mean difference, its paired SE, McNemar counts."""

    n: int
    diff: float  # accuracy(b) - accuracy(a) on the common questions
    se: float  # sd of per-question differences / sqrt(n)
    b_only: int  # questions b gets right and a wrong
    a_only: int  # questions a gets right and b wrong
    p_mcnemar: float  # two-sided exact McNemar p-value

    @property
    def z(self) -> float:
        if self.se > 0:
            return self.diff / self.se
        return 0.0 if self.diff == 0 else math.copysign(math.inf, self.diff)

    @property
    def p_sign(self) -> float:
        """Exact one-sided sign-test p: P(at least b_only of the discordant questions go b's way)
        when each goes either way with probability 1/2 (no real difference)."""
        return sign_test(self.b_only, self.a_only)


def paired(a: Mapping[str, bool], b: Mapping[str, bool]) -> Paired:
    """Compare b against a on the question ids both evaluated."""
    common = sorted(set(a) & set(b))
    n = len(common)
    if n == 0:
        return Paired(0, 0.0, 0.0, 0, 0, 1.0)
    d = [int(bool(b[q])) - int(bool(a[q])) for q in common]
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    b_only, a_only = d.count(1), d.count(-1)
    return Paired(n, mean, math.sqrt(var / n), b_only, a_only, mcnemar_exact(b_only, a_only))


def mcnemar_exact(b_only: int, a_only: int) -> float:
    """Two-sided exact McNemar p: binomial(k = min, n = discordant, 1/2), doubled, capped at 1."""
    n = b_only + a_only
    if n == 0:
        return 1.0
    k = min(b_only, a_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def sign_test(b_only: int, a_only: int) -> float:
    """One-sided exact binomial p: P(X >= b_only), X ~ Binomial(b_only + a_only, 1/2); 1 without discordance."""
    n = b_only + a_only
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(b_only, n + 1)) / 2**n


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (monotone, capped at 1)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Decision:
    """One trial's reading under the winner rule."""

    p_holm: float  # the exact one-sided sign-test p, Holm-adjusted over the trials compared
    beats: bool


def decide(comparisons: Mapping[str, Paired], alpha: float = ALPHA_2SE) -> dict[str, Decision]:
    """The winner rule (module docstring) for several policies compared with the same baseline."""
    names = list(comparisons)
    adjusted = holm([comparisons[n].p_sign for n in names])
    return {n: Decision(p, beats(comparisons[n], p, alpha)) for n, p in zip(names, adjusted, strict=True)}


def beats(comparison: Paired, p_holm: float, alpha: float = ALPHA_2SE) -> bool:
    """Holm-adjusted exact p below `alpha`, at least `MIN_Z` paired SE, and a positive difference."""
    return p_holm < alpha and comparison.z >= MIN_Z and comparison.diff > 0


def winners(comparisons: Mapping[str, Paired], alpha: float = ALPHA_2SE) -> set[str]:
    """Which of several policies beat the same baseline under `decide`."""
    return {n for n, d in decide(comparisons, alpha).items() if d.beats}


def aa_false_winner_rate(rates: Sequence[float], *, trials: int, sessions: int, seed: int = 0) -> float:
    """A/A check of the winner rule (`winners`, the product's rule): sessions whose base and `trials` policies all draw each question's
    outcome from the same per-question rates (nothing better than anything); the share of sessions
    in which the rule still names a winner."""
    rng = random.Random(seed)
    hits = 0
    for _ in range(sessions):
        base = {str(i): rng.random() < p for i, p in enumerate(rates)}
        comps = {str(t): paired(base, {str(i): rng.random() < p for i, p in enumerate(rates)})
                 for t in range(trials)}
        hits += bool(winners(comps))
    return hits / sessions
