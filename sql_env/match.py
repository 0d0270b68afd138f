"""Execution match: does a predicted result equal the gold result?

`mode="spider"` follows Spider's test-suite execution accuracy (Zhong et al. 2020,
`exec_eval.result_eq`):
- both results empty: equal; different row counts or column counts: not equal;
- rows compare as a multiset (duplicates count), or as a sequence when `order_matters`;
- columns may be permuted, but one permutation must hold for every row (the gold columns are
  reordered, the predicted ones never are).
`mode="bird"` follows BIRD's rule: `set(pred) == set(gold)`: no duplicates, no column permutation,
order never matters.

Deliberate departures from both, applied in both modes, and why:
- Numbers compare by value across types: 1 == 1.0 == Decimal("1.00"), True == 1. DuckDB returns
  DECIMAL for SUM over decimals, DOUBLE for AVG and BIGINT for COUNT, so a right answer written
  another way (SUM(x)/COUNT(x) vs AVG(x)) would otherwise be wrong for the type alone.
- Floats carry a relative tolerance: values are rounded to 10 significant digits before comparing
  (0.1 + 0.2 == 0.3). Rounding keeps comparison hashable (multisets stay O(n)); the price is that two
  values within tolerance that straddle a rounding boundary at the 10th digit compare unequal.
- NULL equals NULL (as Spider's Python comparison of `None` already does), NaN equals NaN.
- Dates and timestamps compare by value: date(2024, 1, 2) == datetime(2024, 1, 2, 0, 0); aware
  timestamps compare as UTC instants.
- Spider decides `order_matters` by the substring "order by" anywhere in the gold SQL; here it is the
  gold query's *outermost* ORDER BY (`order_matters(gold_sql)`), so an ORDER BY inside a subquery or
  CTE (which does not fix the order of the result) does not make order matter.
- Spider samples 20 random rows to prune column permutations; here the pruning is deterministic
  (a permutation can only map columns whose value multisets are equal), so verdicts are reproducible.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from decimal import Decimal
from typing import Any, Literal

MatchMode = Literal["spider", "bird"]
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)
_SIGNIFICANT_DIGITS = 10
_MAX_PERMUTATIONS = 100_000  # beyond this many candidate column permutations, give up: not equal


def normalize_value(value: Any) -> Hashable:
    """A hashable key under which equal-by-value cells (see module docstring) are identical."""
    if value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return _normalize_number(float(value))
    if isinstance(value, float):
        return _normalize_number(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    if isinstance(value, list | tuple):
        return tuple(normalize_value(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), normalize_value(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def _normalize_number(x: float) -> Hashable:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return x
    if x.is_integer() and abs(x) < 2**53:  # exactly an integer: compare exactly, like an int
        return int(x)
    x = float(f"{x:.{_SIGNIFICANT_DIGITS}g}")
    # Integral values become ints so 2.0 and 2 share a key (and hash) exactly.
    return int(x) if x.is_integer() else x


def normalize_rows(rows: Sequence[Sequence[Any]]) -> list[tuple]:
    return [tuple(normalize_value(v) for v in row) for row in rows]


def results_match(
    pred_rows: Sequence[Sequence[Any]],
    gold_rows: Sequence[Sequence[Any]],
    order_matters: bool,
    mode: MatchMode = "spider",
) -> bool:
    """True when the predicted result equals the gold result under `mode`'s rules (module docstring)."""
    return GoldResult(gold_rows, order_matters).matches(pred_rows, mode)


class GoldResult:
    """A gold result prepared for many comparisons (GRPO scores many completions per question).

    Two shortcuts that change no verdict come before the rules: rows identical to the gold's raw
    rows (cell for cell equal under Python's `==`, which is how most right answers arrive) match
    without normalising a cell; and under Spider's rule a result whose row or column count differs
    is rejected before its cells are normalised (BIRD compares sets, so lengths may differ there).
    The gold's own normalised rows are computed on first need, once; racing threads only repeat
    that pure work.
    """

    __slots__ = ("_normalized", "order_matters", "rows")

    def __init__(self, rows: Sequence[Sequence[Any]], order_matters: bool) -> None:
        self.rows = rows
        self.order_matters = order_matters
        self._normalized: list[tuple] | None = None

    @property
    def normalized(self) -> list[tuple]:
        if self._normalized is None:
            self._normalized = normalize_rows(self.rows)
        return self._normalized

    def matches(self, pred_rows: Sequence[Sequence[Any]], mode: MatchMode = "spider") -> bool:
        if mode not in ("spider", "bird"):
            raise ValueError(f"unknown match mode {mode!r}; use 'spider' or 'bird'")
        if _identical(pred_rows, self.rows):
            return True
        if mode == "spider" and (
            len(pred_rows) != len(self.rows) or (pred_rows and len(pred_rows[0]) != len(self.rows[0]))
        ):
            return False
        return normalized_results_match(normalize_rows(pred_rows), self.normalized, self.order_matters, mode)


def _identical(pred_rows: Sequence[Sequence[Any]], gold_rows: Sequence[Sequence[Any]]) -> bool:
    """Row for row and cell for cell equal under Python's `==` (one C-level comparison). Cells equal
    under `==` are equal by value, so normalising them could only make them equal too."""
    if len(pred_rows) != len(gold_rows):
        return False
    try:
        return bool(list(map(tuple, pred_rows)) == list(map(tuple, gold_rows)))
    except Exception:  # a cell type whose == does not return a bool: take the normalising path
        return False


def normalized_results_match(
    pred: list[tuple], gold: list[tuple], order_matters: bool, mode: MatchMode = "spider"
) -> bool:
    """`results_match` on rows already passed through `normalize_rows` (lets callers cache gold's)."""
    if mode == "bird":
        return set(pred) == set(gold)
    if mode != "spider":
        raise ValueError(f"unknown match mode {mode!r}; use 'spider' or 'bird'")
    return _spider_equal(pred, gold, order_matters)


def _spider_equal(pred: list[tuple], gold: list[tuple], order_matters: bool) -> bool:
    if not pred and not gold:
        return True
    if len(pred) != len(gold):
        return False
    n_cols = len(pred[0])
    if len(gold[0]) != n_cols or any(len(r) != n_cols for r in pred) or any(len(r) != n_cols for r in gold):
        return False
    # The identity permutation first: it is how almost every right answer matches, at O(rows).
    pred_counter = None if order_matters else Counter(pred)
    if (pred == gold) if order_matters else (pred_counter == Counter(gold)):
        return True
    if n_cols == 1:
        return False
    permutations = _ColumnPermutations(pred, gold, n_cols)
    if permutations.count > 1:
        # Several candidate permutations: reject cheaply first by each row's multiset of cells,
        # which no column permutation changes.
        pred_bags, gold_bags = [_cell_bag(r) for r in pred], [_cell_bag(r) for r in gold]
        if (pred_bags != gold_bags) if order_matters else (Counter(pred_bags) != Counter(gold_bags)):
            return False
    for perm in permutations:
        permuted = [tuple(row[j] for j in perm) for row in gold]
        if order_matters:
            if permuted == pred:
                return True
        elif Counter(permuted) == pred_counter:
            return True
    return False


def _cell_bag(row: tuple) -> tuple:
    return tuple(sorted(Counter(row).items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0]))))


class _ColumnPermutations:
    """Injective maps pred column i -> gold column perm[i] whose column value multisets agree.

    Equal column multisets are necessary for any permutation to make the row multisets equal, so
    pruning with them loses no match. `count` bounds how many maps iteration can yield.
    """

    def __init__(self, pred: list[tuple], gold: list[tuple], n_cols: int) -> None:
        pred_cols = [Counter(row[i] for row in pred) for i in range(n_cols)]
        gold_cols = [Counter(row[j] for row in gold) for j in range(n_cols)]
        self.candidates = [[j for j in range(n_cols) if gold_cols[j] == pred_cols[i]] for i in range(n_cols)]
        self.count = math.prod(len(c) for c in self.candidates)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        n_cols, produced = len(self.candidates), 0
        perm: list[int] = []
        used = [False] * n_cols

        def extend(i: int) -> Iterator[tuple[int, ...]]:
            nonlocal produced
            if i == n_cols:
                produced += 1
                yield tuple(perm)
                return
            for j in self.candidates[i]:
                if used[j] or produced >= _MAX_PERMUTATIONS:
                    continue
                used[j] = True
                perm.append(j)
                yield from extend(i + 1)
                perm.pop()
                used[j] = False

        return extend(0)


def order_matters(gold_sql: str) -> bool:
    """Whether the gold query's outermost SELECT (or set operation) has an ORDER BY.

    An ORDER BY only in a subquery, a CTE or a window does not order the result. Falls back to
    Spider's substring rule when sqlglot cannot parse the query.
    """
    if not _ORDER_BY.search(gold_sql):  # most queries: no ORDER BY anywhere, nothing to parse
        return False
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(gold_sql, read="duckdb")
    except sqlglot.errors.ParseError:
        return "order by" in " ".join(gold_sql.lower().split())
    while True:
        if tree.args.get("order") is not None:
            return True
        if isinstance(tree, exp.Subquery | exp.Paren):
            tree = tree.this
            continue
        return False
