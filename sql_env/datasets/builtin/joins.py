"""Families that follow foreign keys: one-hop and two-hop joins, IN-subqueries."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sql_env.datasets.builtin.families import Draw, article, base, condition, lit
from sql_env.datasets.builtin.spec import Entity, Link, Schema


@dataclass(frozen=True)
class Hop:
    child: Entity
    parent: Entity
    link: Link


@dataclass(frozen=True)
class Chain:
    first: Hop  # A -> B
    second: Hop  # B -> C


def hops(schema: Schema) -> list[Hop]:
    return [Hop(schema.entity(lk.child), schema.entity(lk.parent), lk) for lk in schema.links]


def one_hop(schema: Schema) -> list[Hop]:
    return [h for h in hops(schema) if h.child.label and h.parent.cats]


def two_hop(schema: Schema) -> list[Chain]:
    all_hops = hops(schema)
    return [Chain(a, b) for a in all_hops for b in all_hops
            if a.parent.table == b.child.table and b.parent.cats]


def in_subquery(schema: Schema) -> list[Hop]:
    """Parents listed by a property of their children; a child that refers to the same parent
    twice (flights: origin and destination airport) would make the question ambiguous."""
    all_hops = hops(schema)
    return [h for h in all_hops if h.parent.label and (h.child.nums or h.child.cats)
            and sum(o.child.table == h.child.table and o.parent.table == h.parent.table
                    for o in all_hops) == 1]


def d_join_one(h: Hop, rng: random.Random) -> Draw:
    cat = rng.choice(h.parent.cats)
    v = rng.choice(cat.values)
    return Draw({**base(h.child), "role": h.link.role, "a_role": f"{article(h.link.role)} {h.link.role}",
                 "pcat": cat.word, "v": v},
                f"SELECT T1.{h.child.label} FROM {h.child.table} AS T1 JOIN {h.parent.table} AS T2 "
                f"ON T1.{h.link.fk} = T2.{h.link.pk} WHERE T2.{cat.col} = {lit(v)}")


def d_join_two(c: Chain, rng: random.Random) -> Draw:
    a, b = c.first, c.second
    cat = rng.choice(b.parent.cats)
    v = rng.choice(cat.values)
    return Draw({**base(a.child), "role1": a.link.role, "a_role1": f"{article(a.link.role)} {a.link.role}",
                 "role2": b.link.role, "a_role2": f"{article(b.link.role)} {b.link.role}",
                 "pcat": cat.word, "v": v},
                f"SELECT COUNT(*) FROM {a.child.table} AS T1 JOIN {a.parent.table} AS T2 "
                f"ON T1.{a.link.fk} = T2.{a.link.pk} JOIN {b.parent.table} AS T3 "
                f"ON T2.{b.link.fk} = T3.{b.link.pk} WHERE T3.{cat.col} = {lit(v)}")


def d_sub_in(h: Hop, rng: random.Random) -> Draw | None:
    cond = condition(h.child, rng)
    if cond is None:
        return None
    child = h.child.singular
    return Draw({**base(h.parent), "child": child, "a_child": f"{article(child)} {child}",
                 "cond": cond[1]},
                f"SELECT {h.parent.label} FROM {h.parent.table} WHERE {h.link.pk} IN "
                f"(SELECT {h.link.fk} FROM {h.child.table} WHERE {cond[0]})")
