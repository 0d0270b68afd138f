"""Statistics of evaluations, one owner: accuracy with its standard error, and paired comparisons
of two policies on the same questions. Torch-free; the trial runner, the loop and the report use it.

Two evaluations of different policies on the *same* questions are not independent: most questions
are answered the same way by both, so the standard error of the difference is the standard error
of the per-question differences, sd(d)/sqrt(n), usually far below sqrt(se_a^2 + se_b^2). McNemar's
exact test uses only the discordant questions. Across m trials compared with one base, "beats"
requires the Holm-corrected one-sided p-value to be below the level of 2 standard errors (0.0228):
with one comparison that is exactly "at least 2 paired standard errors".
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ALPHA_2SE = 0.5 * math.erfc(2 / math.sqrt(2))  # one-sided p at z = 2: 0.02275


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
    def p_one_sided(self) -> float:
        """P(diff this large | no real difference), normal approximation of the paired mean."""
        return 0.5 * math.erfc(self.z / math.sqrt(2))


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


def winners(comparisons: Mapping[str, Paired], alpha: float = ALPHA_2SE) -> set[str]:
    """Which of several policies beat the same baseline: Holm-corrected one-sided p below `alpha`."""
    names = list(comparisons)
    adjusted = holm([comparisons[n].p_one_sided for n in names])
    return {n for n, p in zip(names, adjusted, strict=True) if p < alpha and comparisons[n].diff > 0}


def aa_false_winner_rate(rates: Sequence[float], *, trials: int, sessions: int, seed: int = 0) -> float:
    """A/A check of `winners`: sessions whose base and `trials` policies all draw each question's
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
