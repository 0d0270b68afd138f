"""What a built-in schema declares: its tables and rows, and the words questions use for them.

Question families (families.py) are written once against these descriptions, so every family
applies to every schema that has the columns it needs; that is what makes held-out
schema x family combinations possible.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Num:
    """A numeric column and the thresholds questions may use (the same set for every split)."""

    col: str
    word: str
    values: tuple[int | float, ...]
    additive: bool = True  # False where a total means nothing (years, levels, grades)


@dataclass(frozen=True)
class Cat:
    """A categorical column; `values` are the ones questions may name (all occur in the data)."""

    col: str
    word: str
    plural: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Like:
    col: str
    word: str
    prefixes: tuple[str, ...]
    fragments: tuple[str, ...]


@dataclass(frozen=True)
class Entity:
    table: str
    singular: str
    plural: str
    key: str | None = None
    label: str | None = None  # the column a question lists ("name", "order_id")
    label_word: str = "name"
    nums: tuple[Num, ...] = ()
    cats: tuple[Cat, ...] = ()
    date: tuple[str, str] | None = None  # (column, words)
    years: tuple[int, ...] = ()
    nullable: tuple[str, str] | None = None  # (column, words) for IS NULL questions
    like: Like | None = None


@dataclass(frozen=True)
class Link:
    """child.fk -> parent.pk; `role` is how a child row refers to its parent ("customer")."""

    child: str
    parent: str
    fk: str
    pk: str
    role: str


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]  # DDL column definitions, constraints included
    batches: tuple[list[tuple], ...]  # inserted in order (self-references need parents first)

    @property
    def n_rows(self) -> int:
        return sum(len(b) for b in self.batches)


@dataclass(frozen=True)
class Schema:
    db_id: str
    domain: str
    make_tables: Callable[[random.Random], list[Table]]
    entities: tuple[Entity, ...]
    links: tuple[Link, ...] = field(default=())

    def entity(self, table: str) -> Entity:
        return next(e for e in self.entities if e.table == table)


FIRST_NAMES = (
    "Alice", "Bruno", "Chloe", "Daniel", "Elena", "Farid", "Grace", "Hugo", "Irene", "Jonas",
    "Karen", "Liam", "Maya", "Nadia", "Oscar", "Paula", "Rosa", "Samir", "Tara", "Umar", "Vera",
    "Walter", "Yusuf", "Zoe", "Anna", "Ben", "Carla", "David", "Emma", "Felix", "Gina", "Henry",
    "Ivan", "Julia", "Kevin", "Laura", "Marco", "Nina", "Omar", "Petra", "Rita", "Simon", "Tom",
    "Victor", "Wendy", "Aaron", "Brian", "Clara", "Diana", "Erik",
)
LAST_NAMES = (
    "Smith", "Garcia", "Muller", "Rossi", "Nowak", "Silva", "Kim", "Chen", "Patel", "Johnson",
    "Brown", "Martin", "Dubois", "Jensen", "Novak", "Costa", "Lopez", "Walker", "Young", "Wright",
    "Hughes", "Fischer", "Weber", "Moreau", "Larsen", "Kowalski", "Santos", "Ito", "Sato",
    "Nguyen", "Ali", "Khan", "Meyer", "Berg", "Olsen", "Rivera",
)
NAME_PREFIXES = ("Al", "Br", "Ch", "Da", "El", "Gr", "Hu", "Ka", "Ma", "Na", "Pa", "Sa", "To", "Vi")
NAME_FRAGMENTS = ("an", "ar", "el", "en", "in", "or", "ri", "ss", "on", "ia")


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def day(rng: random.Random, first: str, last: str) -> dt.date:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return start + dt.timedelta(days=rng.randrange((end - start).days + 1))


def weighted(rng: random.Random, options: dict[str, float]) -> str:
    return rng.choices(list(options), weights=list(options.values()))[0]


def skewed_id(rng: random.Random, head: int, total: int, head_share: float) -> int:
    """An id in 1..total: one of the first `head` (the curated rows questions name) with probability
    `head_share`, else one from the long tail head+1..total."""
    return rng.randint(1, head) if rng.random() < head_share else rng.randint(head + 1, total)


def unique_pairs(rng: random.Random, n: int, a_max: int, b_max: int) -> list[tuple[int, int]]:
    """n distinct (a, b) pairs with 1 <= a <= a_max, 1 <= b <= b_max, in a seeded order."""
    seen: set[tuple[int, int]] = set()
    out = []
    while len(out) < n:
        pair = (rng.randint(1, a_max), rng.randint(1, b_max))
        if pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out
