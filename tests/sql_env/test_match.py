"""Exact verdicts for every execution-match rule and trap (Spider test-suite semantics + departures)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from sql_env.match import (
    GoldResult,
    normalize_rows,
    normalize_value,
    normalized_results_match,
    order_matters,
    results_match,
)


# -- Spider rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pred", "gold", "order", "expected"),
    [
        # both empty is equal; one empty is not
        ([], [], False, True),
        ([], [], True, True),
        ([], [(1,)], False, False),
        ([(1,)], [], False, False),
        # rows are a multiset: order ignored, duplicates count
        ([(1,), (2,)], [(2,), (1,)], False, True),
        ([(1,), (1,), (2,)], [(1,), (2,), (2,)], False, False),  # same set, different multiset
        ([(1,), (1,)], [(1,)], False, False),  # duplicates count
        ([(1,), (1,)], [(1,), (1,)], False, True),
        # order compared when it matters
        ([(1,), (2,)], [(2,), (1,)], True, False),
        ([(1,), (2,)], [(1,), (2,)], True, True),
        # column counts must agree
        ([(1, 2)], [(1,)], False, False),
        ([(1,)], [(1, 2)], False, False),
        # values must agree
        ([("a",)], [("b",)], False, False),
    ],
)
def test_spider_row_rules(pred, gold, order, expected) -> None:
    assert results_match(pred, gold, order_matters=order) is expected


def test_columns_match_up_to_one_permutation() -> None:
    gold = [("Lyon", 2), ("Porto", 1)]
    assert results_match([(2, "Lyon"), (1, "Porto")], gold, order_matters=False) is True
    assert results_match([(1, "Porto"), (2, "Lyon")], gold, order_matters=False) is True
    # permutation plus ordered rows
    assert results_match([(2, "Lyon"), (1, "Porto")], gold, order_matters=True) is True
    assert results_match([(1, "Porto"), (2, "Lyon")], gold, order_matters=True) is False


def test_column_permutation_must_hold_for_every_row() -> None:
    # Row 1 matches gold with columns swapped, row 2 only without: no single permutation works.
    gold = [(1, 2), (3, 4)]
    pred = [(2, 1), (3, 4)]
    assert results_match(pred, gold, order_matters=False) is False
    # Every pred row is a permutation of a gold row and the column multisets agree, yet no single
    # column permutation maps all rows at once.
    gold = [(1, 3, 2), (3, 2, 1), (2, 3, 2)]
    pred = [(2, 2, 3), (3, 1, 2), (3, 2, 1)]
    assert results_match(pred, gold, order_matters=False) is False


def test_identical_columns_permute_freely() -> None:
    gold = [(1, 1, "a"), (2, 2, "b")]
    assert results_match([("a", 1, 1), ("b", 2, 2)], gold, order_matters=False) is True


def test_wide_results_with_many_equal_columns_still_decide() -> None:
    gold = [tuple([0] * 9 + [i]) for i in range(3)]
    pred = [tuple([i] + [0] * 9) for i in range(3)]
    assert results_match(pred, gold, order_matters=False) is True
    pred_bad = [tuple([i] + [0] * 8 + [1]) for i in range(3)]
    assert results_match(pred_bad, gold, order_matters=False) is False


# -- BIRD mode ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ([(1,), (1,), (2,)], [(1,), (2,), (2,)], True),  # sets: duplicates ignored
        ([(2,), (1,)], [(1,), (2,)], True),
        ([(2, 1)], [(1, 2)], False),  # no column permutation in BIRD
        ([], [], True),
        ([], [(1,)], False),
    ],
)
def test_bird_set_rule(pred, gold, expected) -> None:
    assert results_match(pred, gold, order_matters=True, mode="bird") is expected


def test_unknown_mode_says_the_choices() -> None:
    with pytest.raises(ValueError, match="'spider' or 'bird'"):
        results_match([(1,)], [(1,)], False, mode="sql")  # type: ignore[arg-type]


# -- departures -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        (1, 1.0, True),
        (Decimal("1.50"), 1.5, True),
        (Decimal("2.00"), 2, True),
        (True, 1, True),
        (0.1 + 0.2, 0.3, True),  # float noise within tolerance
        (2 / 3, 0.6666666666666666, True),
        (100.0000000001, 100, True),
        (1.0, 1.001, False),  # a real difference
        (1.5, 1.6, False),
        (12345678901, 12345678902, False),  # large ints stay exact
        (12345678901234.0, 12345678901234, True),
        (None, None, True),  # NULL == NULL
        (None, 0, False),
        (float("nan"), float("nan"), True),
        (dt.date(2024, 1, 2), dt.datetime(2024, 1, 2), True),
        (dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 0, 0, 1), False),
        (
            dt.datetime(2024, 1, 2, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2024, 1, 2, 10),
            True,
        ),
        (dt.date(2024, 1, 2), "2024-01-02", False),  # strings are not dates
        ("1", 1, False),  # nor numbers
        ([1, 2], (1, 2), True),  # DuckDB LIST values
        ({"a": 1}, {"a": 1.0}, True),  # STRUCT values
    ],
)
def test_values_compare_by_value(pred, gold, expected) -> None:
    assert results_match([(pred,)], [(gold,)], order_matters=False) is expected
    assert results_match([(pred,)], [(gold,)], order_matters=False, mode="bird") is expected


def test_normalize_value_is_hashable_for_every_duckdb_type() -> None:
    for value in [1, 1.5, Decimal("1.25"), "x", b"\x00", None, dt.date(2024, 1, 1), dt.time(1, 2), [1, [2]], {"k": [1]}]:
        hash(normalize_value(value))


def test_numeric_departure_on_whole_results() -> None:
    gold = [("Sales", Decimal("1250.50"), 100), ("Research", Decimal("1000.00"), 100)]
    pred = [("Research", 1000.0, 100.0), ("Sales", 1250.5, 100)]
    assert results_match(pred, gold, order_matters=False) is True


class _RaisingEq:
    """A cell whose `==` raises (as numpy arrays' truth value would): the shortcut must step aside."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("ambiguous")

    __hash__ = object.__hash__


@pytest.mark.parametrize("mode", ["spider", "bird"])
@pytest.mark.parametrize("order", [False, True])
@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ([], []),
        ([(1,), (2,)], [(1,), (2,)]),
        ([(1,), (2,)], [(2,), (1,)]),
        ([(1,), (1,)], [(1,)]),
        ([(1, "a", None)], [(1.0, "a", None)]),  # equal by ==, different types
        ([(Decimal("1.50"), True)], [(1.5, 1)]),
        ([(dt.date(2024, 1, 2),)], [(dt.datetime(2024, 1, 2),)]),  # == says no, the rules say yes
        ([(float("nan"),)], [(float("nan"),)]),
        ([[1, 2]], [(1, 2)]),  # rows as lists
        ([(2, 1)], [(1, 2)]),  # a column permutation
        ([(_RaisingEq(),)], [(1,)]),
    ],
)
def test_gold_result_shortcuts_never_change_a_verdict(pred, gold, order, mode) -> None:
    def verdict(fn):
        try:
            return fn()
        except ValueError as e:  # the rules have no answer for such a cell either
            return repr(e)

    rules = verdict(lambda: normalized_results_match(normalize_rows(pred), normalize_rows(gold), order, mode))
    assert verdict(lambda: GoldResult(gold, order).matches(pred, mode)) == rules


def test_gold_result_normalises_the_gold_only_when_needed() -> None:
    day = dt.date(2024, 1, 2)
    gold = GoldResult([(i, f"name {i}", i / 3, day) for i in range(1000)], order_matters=True)
    assert gold.matches([(i, f"name {i}", i / 3, day) for i in range(1000)]) is True
    assert gold.matches([(1, "x", 0.5, day)]) is False  # another row count: rejected on shape
    assert gold._normalized is None
    midnight = dt.datetime(2024, 1, 2)  # != the date under ==, equal under the rules
    assert gold.matches([(i, f"name {i}", i / 3, midnight) for i in range(1000)]) is True
    assert gold._normalized is not None


# -- order_matters from the gold SQL ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT a FROM t ORDER BY a", True),
        ("SELECT a FROM t order   by a DESC LIMIT 3", True),
        ("SELECT a FROM t ORDER\n  BY a", True),
        ("SELECT a FROM t", False),
        ("SELECT * FROM (SELECT a FROM t ORDER BY a LIMIT 3) s", False),  # subquery only
        ("SELECT a FROM t WHERE b IN (SELECT b FROM u ORDER BY b LIMIT 1)", False),
        ("WITH x AS (SELECT a FROM t ORDER BY a) SELECT * FROM x", False),  # CTE only
        ("WITH x AS (SELECT a FROM t) SELECT * FROM x ORDER BY a", True),
        ("SELECT a, row_number() OVER (ORDER BY a) FROM t", False),  # window only
        ("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1", True),
        ("SELECT a FROM t UNION ALL (SELECT b FROM u ORDER BY b)", False),
        ("(SELECT a FROM t ORDER BY a)", True),
        ("SELECT a FROM t WHERE name = 'order by'", False),  # the substring trap
        ("SELECT ((( FROM broken ORDER BY x", True),  # unparsable: Spider's substring rule
    ],
)
def test_order_matters_reads_the_outermost_order_by(sql: str, expected: bool) -> None:
    assert order_matters(sql) is expected
