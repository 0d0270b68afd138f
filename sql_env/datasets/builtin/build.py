"""Build the built-in benchmark: four databases and train/dev/test questions, from one seed.

Splits (see docs/grpo-calibration.md for why dev looks like this):
- train: schema x family combinations that are not held out, phrasings 1..n-1 of each family.
- dev and test, each a third of:
  `composition` - a (schema, family) pair train never shows (each family is held out on one schema),
  `phrasing`    - a trained pair asked with the family's held-out phrasing,
  in-distribution - a trained pair and phrasing with values train did not combine this way.
Every literal a dev or test gold query needs (a city, a threshold, a date, a LIKE prefix) also
occurs in some train gold query, so no dev failure is a token training never produced; every
question is distinct across all splits; every gold query is executed here and must return at
least one non-trivial row.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import duckdb

from sql_env.datasets.builtin import flights, hr, retail, university
from sql_env.datasets.builtin.families import Draw, Family
from sql_env.datasets.builtin.registry import FAMILIES
from sql_env.datasets.builtin.spec import Schema
from sql_env.datasets.folder import cache_root, publish, staging_dir, write_json, write_split
from sql_env.types import Example

# Bump whenever generated content changes: the cache folder is keyed by it, so a stale build
# is never reused (test_builtin.py pins a hash of the output to catch a forgotten bump).
VERSION = 5
SCHEMAS: tuple[Schema, ...] = (retail.SCHEMA, flights.SCHEMA, university.SCHEMA, hr.SCHEMA)
SIZES = {"train": 3200, "dev": 400, "test": 400}
MAX_GOLD_ROWS = 1000  # keeps gold comparisons cheap for the reward loop
GIVE_UP_AFTER = 60  # consecutive failed draws before a combination counts as exhausted

Combo = tuple[str, str]  # (db_id, family name)
_STRING = re.compile(r"'((?:[^']|'')*)'")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


def literals(sql: str) -> set[str]:
    """The values a gold query copies from its question: strings (LIKE wildcards dropped), numbers."""
    strings = {m.replace("''", "'").strip("%") for m in _STRING.findall(sql)}
    return strings | set(_NUMBER.findall(_STRING.sub("", sql)))


def builtin_dir(seed: int = 0) -> Path:
    return cache_root() / f"builtin-v{VERSION}-seed{seed}"


def build_builtin(seed: int = 0, out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Build (or reuse) the built-in benchmark and return its folder."""
    final = Path(out_dir).expanduser() if out_dir else builtin_dir(seed)
    if (final / "manifest.json").is_file() and not force:
        return final
    started = time.perf_counter()
    staging = staging_dir(final)
    rng = random.Random(seed)
    cons, tables = {}, {}
    try:
        for schema in SCHEMAS:
            cons[schema.db_id], tables[schema.db_id] = create_database(
                staging / "databases" / f"{schema.db_id}.duckdb", schema, rng)
        splits, held = Generator(cons, rng).all_splits()
    except BaseException:
        for con in cons.values():
            con.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for con in cons.values():
        con.close()
    counts = {name: write_split(staging, name, examples) for name, examples in splits.items()}
    write_json(staging / "manifest.json", {
        "name": "builtin", "source": "builtin", "version": VERSION, "seed": seed,
        "splits": counts,
        "databases": {db: {"file": f"databases/{db}.duckdb", "tables": t} for db, t in tables.items()},
        "families": {f.name: f.difficulty for f in FAMILIES},
        "held_out_combinations": sorted([db, fam] for db, fam in held),
        "held_out_phrasings": {f.name: f.phrasings[-1] for f in FAMILIES},
        "build_seconds": round(time.perf_counter() - started, 2),
    })
    return publish(staging, final, force)


def _sql_value(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    return repr(value)


def create_database(path: Path, schema: Schema, rng: random.Random):
    """Write one schema's tables; returns the open connection and rows per table."""
    con = duckdb.connect(str(path))
    counts = {}
    for table in schema.make_tables(rng):
        con.execute(f"CREATE TABLE {table.name} ({', '.join(table.columns)})")
        for batch in table.batches:
            # One multi-row VALUES per chunk: executemany is ~50x slower in DuckDB.
            for i in range(0, len(batch), 1000):
                values = ", ".join("(" + ", ".join(map(_sql_value, row)) + ")" for row in batch[i:i + 1000])
                con.execute(f"INSERT INTO {table.name} VALUES {values}")
        counts[table.name] = table.n_rows
    return con, counts


def held_out(eligible: dict[str, list[str]]) -> set[Combo]:
    """One schema per family, rotating so that every schema loses some families."""
    held = set()
    for i, fam in enumerate(FAMILIES):
        dbs = eligible[fam.name]
        if len(dbs) >= 2:
            held.add((dbs[i % len(dbs)], fam.name))
    return held


class Generator:
    def __init__(self, cons: dict[str, duckdb.DuckDBPyConnection], rng: random.Random):
        self.cons, self.rng = cons, rng
        self.families = {f.name: f for f in FAMILIES}
        self.candidates = {(s.db_id, f.name): f.candidates(s) for s in SCHEMAS for f in FAMILIES}
        self.questions: set[str] = set()
        self.train_literals: set[str] = set()
        self.gold_ok: dict[str, bool] = {}

    def all_splits(self) -> tuple[dict[str, list[Example]], set[Combo]]:
        eligible = {f.name: [s.db_id for s in SCHEMAS if self.candidates[(s.db_id, f.name)]] for f in FAMILIES}
        held = held_out(eligible)
        trained = [(db, f) for f, dbs in eligible.items() for db in dbs if (db, f) not in held]
        comp = sorted(held)
        splits = {"train": self.fill("train", SIZES["train"], trained, "train", "train")}
        for split in ("dev", "test"):
            third = SIZES[split] // 3
            part = (self.fill(split, SIZES[split] - 2 * third, comp, "any", "composition")
                    + self.fill(split, third, trained, "held", "phrasing")
                    + self.fill(split, third, trained, "train", ""))
            self.rng.shuffle(part)
            splits[split] = [Example(**{**ex.to_json(), "id": f"{split}-{i:04d}"}) for i, ex in enumerate(part)]
        self.rng.shuffle(splits["train"])
        splits["train"] = [Example(**{**ex.to_json(), "id": f"train-{i:04d}"})
                           for i, ex in enumerate(splits["train"])]
        return splits, held

    def fill(self, split: str, target: int, combos: list[Combo], phrasings: str, tag: str) -> list[Example]:
        """Round-robin over combinations so each gets an even share until its pool runs dry.
        `tag`: "train", or what a dev/test item holds out ("composition", "phrasing", "" for none)."""
        out: list[Example] = []
        active = list(combos)
        self.rng.shuffle(active)
        fails: Counter[Combo] = Counter()
        while len(out) < target and active:
            for combo in list(active):
                if len(out) >= target:
                    break
                example = self.draw(combo, phrasings, tag)
                if example is None:
                    fails[combo] += 1
                    if fails[combo] >= GIVE_UP_AFTER:
                        active.remove(combo)
                    continue
                fails[combo] = 0
                out.append(example)
        if len(out) < target:
            raise RuntimeError(f"built-in {split}: only {len(out)} of {target} distinct questions")
        return out

    def draw(self, combo: Combo, phrasings: str, tag: str) -> Example | None:
        db, fam_name = combo
        fam: Family = self.families[fam_name]
        n = len(fam.phrasings)
        index = {"train": self.rng.randrange(n - 1), "held": n - 1, "any": self.rng.randrange(n)}[phrasings]
        drawn = fam.draw(self.rng.choice(self.candidates[combo]), self.rng)
        if drawn is None:
            return None
        question = fam.phrasings[index].format(**drawn.slots)
        values = literals(drawn.sql)
        if question in self.questions or (tag != "train" and not values <= self.train_literals):
            return None
        if not self.check(db, drawn):
            return None
        self.questions.add(question)
        if tag == "train":
            self.train_literals |= values
        return Example(id="", db_id=db, question=question, gold_sql=drawn.sql,
                       difficulty=fam.difficulty, family=fam.name, holdout=None if tag in ("train", "") else tag)

    def check(self, db: str, drawn: Draw) -> bool:
        """Gold must run, return 1..MAX_GOLD_ROWS rows, not be a zero/NULL aggregate, and (for top-k)
        have no ties at the cut, so exactly one answer is right."""
        key = f"{db}\x00{drawn.sql}"
        if key not in self.gold_ok:
            con = self.cons[db]
            rows = con.execute(drawn.sql).fetchmany(MAX_GOLD_ROWS + 1)
            ok = 0 < len(rows) <= MAX_GOLD_ROWS and not (len(rows) == 1 and all(v in (None, 0) for v in rows[0]))
            if ok and drawn.tie_sql:
                values = [r[0] for r in con.execute(drawn.tie_sql).fetchall()]
                ok = len(set(values)) == len(values)
            self.gold_ok[key] = ok
        return self.gold_ok[key]
