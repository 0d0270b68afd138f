"""Question families: one SQL shape each, several phrasings, written once for every schema.

Canonical gold style (so a tiny model can learn one way to write each shape): upper-case
keywords and functions, lower-case identifiers, single-quoted strings, `AS T1`, `AS T2` aliases
only when a query joins, no trailing semicolon. Every value the SQL needs appears verbatim in the
question. The last phrasing of each family never appears in train (see build.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sql_env.datasets.builtin.spec import Entity, Num, Schema


@dataclass(frozen=True)
class Draw:
    slots: dict[str, str]
    sql: str
    tie_sql: str | None = None  # ORDER BY ... LIMIT: these values must be distinct (no ties)


@dataclass(frozen=True)
class Family:
    name: str
    difficulty: str
    candidates: Callable[[Schema], list[Any]]
    draw: Callable[[Any, random.Random], Draw | None]
    phrasings: tuple[str, ...]


def plural(word: str) -> str:
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def lit(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def condition(e: Entity, rng: random.Random, skip: str | None = None) -> tuple[str, str] | None:
    """A random WHERE condition on one column of `e` and the words that say it."""
    options = [(n, op) for n in e.nums if n.col != skip for op in (">", "<")]
    options += [(c, "=") for c in e.cats if c.col != skip]
    if not options:
        return None
    col, op = rng.choice(options)
    value = rng.choice(col.values)
    words = {">": "is above ", "<": "is below ", "=": "is "}[op]
    return f"{col.col} {op} {lit(value)}", f"whose {col.word} {words}{value}"


def base(e: Entity) -> dict[str, str]:
    return {"plural": e.plural, "singular": e.singular, "labels": plural(e.label_word)}


def entities(need: Callable[[Entity], bool]) -> Callable[[Schema], list[Entity]]:
    return lambda s: [e for e in s.entities if need(e)]


def labelled(e: Entity) -> bool:
    return e.label is not None


# ---- single-table families ------------------------------------------------------------------

def d_projection(e: Entity, rng: random.Random) -> Draw:
    other = rng.choice([c for c in e.nums + e.cats if c.col != e.label])
    pair = [(e.label, e.label_word), (other.col, other.word)]
    if rng.random() < 0.5:
        pair.reverse()
    (c1, w1), (c2, w2) = pair
    return Draw({**base(e), "a": w1, "b": w2}, f"SELECT {c1}, {c2} FROM {e.table}")


def d_compare(e: Entity, rng: random.Random) -> Draw:
    num, op = rng.choice(e.nums), rng.choice((">", "<"))
    v = rng.choice(num.values)
    cmp = "above" if op == ">" else "below"
    return Draw({**base(e), "num": num.word, "a_num": f"{article(num.word)} {num.word}", "cmp": cmp, "v": str(v)},
                f"SELECT {e.label} FROM {e.table} WHERE {num.col} {op} {v}")


def d_equal(e: Entity, rng: random.Random) -> Draw:
    cat = rng.choice([c for c in e.cats if c.col != e.label])
    v = rng.choice(cat.values)
    return Draw({**base(e), "cat": cat.word, "v": v},
                f"SELECT {e.label} FROM {e.table} WHERE {cat.col} = {lit(v)}")


def d_range(e: Entity, rng: random.Random) -> Draw:
    num = rng.choice(e.nums)
    lo, hi = sorted(rng.sample(num.values, 2))
    return Draw({**base(e), "num": num.word, "a_num": f"{article(num.word)} {num.word}", "lo": str(lo), "hi": str(hi)},
                f"SELECT {e.label} FROM {e.table} WHERE {num.col} BETWEEN {lo} AND {hi}")


def d_like(e: Entity, rng: random.Random) -> Draw:
    assert e.like is not None
    if rng.random() < 0.5:
        p = rng.choice(e.like.prefixes)
        how, pattern = f"starts with '{p}'", f"{p}%"
    else:
        p = rng.choice(e.like.fragments)
        how, pattern = f"contains '{p}'", f"%{p}%"
    return Draw({**base(e), "col": e.like.word, "how": how},
                f"SELECT {e.label} FROM {e.table} WHERE {e.like.col} LIKE {lit(pattern)}")


def d_in(e: Entity, rng: random.Random) -> Draw:
    cat = rng.choice([c for c in e.cats if c.col != e.label])
    a, b = rng.sample(cat.values, 2)
    return Draw({**base(e), "cat": cat.word, "v1": a, "v2": b},
                f"SELECT {e.label} FROM {e.table} WHERE {cat.col} IN ({lit(a)}, {lit(b)})")


def d_null(e: Entity, rng: random.Random) -> Draw | None:
    assert e.nullable is not None
    col, word = e.nullable
    cond = condition(e, rng, skip=col)
    if cond is None:
        return None
    return Draw({**base(e), "cond": cond[1], "col": word},
                f"SELECT {e.label} FROM {e.table} WHERE {cond[0]} AND {col} IS NULL")


def d_count(e: Entity, rng: random.Random) -> Draw | None:
    cond = condition(e, rng)
    if cond is None:
        return None
    return Draw({**base(e), "cond": cond[1]}, f"SELECT COUNT(*) FROM {e.table} WHERE {cond[0]}")


AGGS = (("AVG", "average"), ("MAX", "highest"), ("MIN", "lowest"), ("SUM", "total"))


def aggs(num: Num) -> tuple[tuple[str, str], ...]:
    return AGGS if num.additive else AGGS[:3]


def d_aggregate(e: Entity, rng: random.Random) -> Draw | None:
    num = rng.choice(e.nums)
    fn, word = rng.choice(aggs(num))
    cond = condition(e, rng, skip=num.col)
    if cond is None:
        return None
    return Draw({**base(e), "agg": word, "num": num.word, "cond": cond[1]},
                f"SELECT {fn}({num.col}) FROM {e.table} WHERE {cond[0]}")


def d_group(e: Entity, rng: random.Random) -> Draw:
    cat = rng.choice([c for c in e.cats if c.col != e.label])
    options = [("COUNT(*)", f"number of {e.plural}")]
    options += [(f"{fn}({n.col})", f"{w} {n.word}") for n in e.nums for fn, w in aggs(n)]
    expr, measure = rng.choice(options)
    return Draw({**base(e), "cat": cat.word, "measure": measure},
                f"SELECT {cat.col}, {expr} FROM {e.table} GROUP BY {cat.col}")


HAVING_COUNTS = (5, 10, 20, 30, 40, 50, 75, 100, 150, 200, 300, 400)


def d_having(e: Entity, rng: random.Random) -> Draw:
    cat = rng.choice([c for c in e.cats if c.col != e.label])
    if not e.nums or rng.random() < 0.4:
        k = rng.choice(HAVING_COUNTS)
        expr, words = f"COUNT(*) > {k}", f"more than {k} {e.plural}"
    else:
        num = rng.choice(e.nums)
        fn, w = rng.choice(AGGS[:3])
        v = rng.choice(num.values)
        expr, words = f"{fn}({num.col}) > {v}", f"{w} {num.word} above {v}"
    return Draw({**base(e), "cats": cat.plural, "cat": cat.word, "having": words},
                f"SELECT {cat.col} FROM {e.table} GROUP BY {cat.col} HAVING {expr}")


def d_top(e: Entity, rng: random.Random) -> Draw:
    num, k = rng.choice(e.nums), rng.choice((3, 5, 10))
    desc = rng.random() < 0.5
    order = f"{num.col} DESC" if desc else num.col
    cond = condition(e, rng, skip=num.col) if rng.random() < 0.6 else None
    where = f" WHERE {cond[0]}" if cond else ""
    return Draw({**base(e), "k": str(k), "ext": "highest" if desc else "lowest", "num": num.word,
                 "wc": f" {cond[1]}" if cond else ""},
                f"SELECT {e.label} FROM {e.table}{where} ORDER BY {order} LIMIT {k}",
                tie_sql=f"SELECT {num.col} FROM {e.table}{where} ORDER BY {order} LIMIT {k + 1}")


def d_distinct(e: Entity, rng: random.Random) -> Draw | None:
    cat = rng.choice(e.cats)
    cond = condition(e, rng, skip=cat.col)
    if cond is None:
        return None
    return Draw({**base(e), "cats": cat.plural, "cat": cat.word, "cond": cond[1]},
                f"SELECT DISTINCT {cat.col} FROM {e.table} WHERE {cond[0]}")


def d_dates(e: Entity, rng: random.Random) -> Draw:
    assert e.date is not None
    col, word = e.date
    year = rng.choice(e.years)
    kind = rng.choice(("in", "after", "before"))
    if kind == "in":
        when, expr = f"in {year}", f"YEAR({col}) = {year}"
    else:
        date = f"{year}-{rng.randint(1, 12):02d}-01"
        when, expr = f"{kind} {date}", f"{col} {'>' if kind == 'after' else '<'} '{date}'"
    return Draw({**base(e), "date": word, "a_date": f"{article(word)} {word}", "when": when},
                f"SELECT COUNT(*) FROM {e.table} WHERE {expr}")


def d_sub_avg(e: Entity, rng: random.Random) -> Draw | None:
    num = rng.choice(e.nums)
    cond = condition(e, rng, skip=num.col)
    if cond is None:
        return None
    op = rng.choice((">", "<"))
    return Draw({**base(e), "num": num.word, "a_num": f"{article(num.word)} {num.word}", "cond": cond[1],
                 "cmp": "above" if op == ">" else "below"},
                f"SELECT {e.label} FROM {e.table} WHERE {cond[0]} AND {num.col} {op} "
                f"(SELECT AVG({num.col}) FROM {e.table})")
