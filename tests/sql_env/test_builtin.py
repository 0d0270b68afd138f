import json
import random
import re

import duckdb
import pytest

from sql_env.datasets import build_builtin, load_dataset
from sql_env.datasets.builtin.build import SCHEMAS, VERSION, literals
from sql_env.datasets.builtin.registry import FAMILIES

REQUIRED_FAMILIES = {"projection", "filter_compare", "filter_range", "filter_like", "filter_in", "filter_null",
                     "aggregate", "group_by", "group_having", "order_limit", "join_one", "join_two",
                     "subquery_avg", "subquery_in", "distinct", "dates"}


@pytest.fixture(scope="module")
def splits(builtin_dir):
    return {s: load_dataset("builtin", s) for s in ("train", "dev", "test")}


def test_split_sizes_and_manifest(builtin_dir, splits):
    assert len(splits["train"]) >= 3000
    assert len(splits["dev"]) == 400 and len(splits["test"]) == 400
    manifest = json.loads((builtin_dir / "manifest.json").read_text())
    assert manifest["splits"] == {s: len(v) for s, v in splits.items()}
    assert REQUIRED_FAMILIES <= set(manifest["families"])
    assert {e.family for e in splits["train"]} == set(manifest["families"])
    assert {e.difficulty for e in splits["dev"]} == {"easy", "medium", "hard"}


def test_schemas_have_keys_and_realistic_sizes(builtin_dir):
    tables = fks = 0
    for schema in SCHEMAS:
        con = duckdb.connect(str(builtin_dir / "databases" / f"{schema.db_id}.duckdb"), read_only=True)
        kinds = con.execute("SELECT table_name, constraint_type FROM duckdb_constraints()").fetchall()
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        tables += len(names)
        assert all((t, "PRIMARY KEY") in kinds for t in names), schema.db_id
        fks += sum(k == "FOREIGN KEY" for _, k in kinds)
        counts = {t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in names}
        assert max(counts.values()) >= 2000, schema.db_id
        assert min(counts.values()) >= 200, counts  # hundreds to thousands of rows in every table
        con.close()
    assert len(SCHEMAS) >= 4 and tables >= 12 and fks >= 10


def test_every_gold_runs_and_returns_rows(builtin_dir, splits):
    cons = {s.db_id: duckdb.connect(str(builtin_dir / "databases" / f"{s.db_id}.duckdb"), read_only=True)
            for s in SCHEMAS}
    for split in splits.values():
        for ex in split:
            rows = cons[ex.db_id].execute(ex.gold_sql).fetchall()
            assert any(v is not None for row in rows for v in row), ex


def test_questions_distinct_and_dev_unseen(splits):
    all_q = [e.question for s in splits.values() for e in s]
    assert len(all_q) == len(set(all_q))
    assert len({e.id for s in splits.values() for e in s}) == len(all_q)


def test_held_out_combinations_and_phrasings_absent_from_train(builtin_dir, splits):
    manifest = json.loads((builtin_dir / "manifest.json").read_text())
    held = {tuple(c) for c in manifest["held_out_combinations"]}
    assert len(held) >= len(FAMILIES) - 2
    assert not any((e.db_id, e.family) in held for e in splits["train"])
    patterns = {f: re.compile(re.escape(t).replace(r"\{", "{").replace(r"\}", "}")
                              .replace("{", "(?P<").replace("}", ">.+?)") + "$")
                for f, t in manifest["held_out_phrasings"].items()}
    patterns = {f: re.compile(re.sub(r"\(\?P<(\w+)>", "(?:", p.pattern)) for f, p in patterns.items()}
    assert not any(patterns[e.family].match(e.question) for e in splits["train"])
    for split in ("dev", "test"):
        tags = [e.holdout for e in splits[split]]
        assert tags.count("composition") >= 100 and tags.count("phrasing") >= 100
        comp = [e for e in splits[split] if e.holdout == "composition"]
        assert all((e.db_id, e.family) in held for e in comp)
        phr = [e for e in splits[split] if e.holdout == "phrasing"]
        assert all(patterns[e.family].match(e.question) for e in phr)


def test_dev_values_come_from_train_value_sets(splits):
    """A value in a dev gold query that no train gold query contains is a failure sampling cannot find."""
    train = set().union(*(literals(e.gold_sql) for e in splits["train"]))
    for split in ("dev", "test"):
        used = set().union(*(literals(e.gold_sql) for e in splits[split]))
        assert used and used <= train
    assert literals("SELECT a FROM t WHERE b LIKE 'Al%' AND c > 3.5 AND d = 'O''Hare' LIMIT 5") == \
        {"Al", "3.5", "O'Hare", "5"}


def test_every_sql_literal_is_in_the_question(splits):
    for ex in splits["train"] + splits["dev"]:
        for text in re.findall(r"'((?:[^']|'')*)'", ex.gold_sql):
            assert text.replace("''", "'").strip("%") in ex.question, ex
        sql_no_strings = re.sub(r"'(?:[^']|'')*'", "", ex.gold_sql)
        for number in re.findall(r"(?<![\w.])\d+(?:\.\d+)?", sql_no_strings):
            assert number in ex.question, ex


def test_canonical_style(splits):
    for ex in random.Random(0).sample(splits["train"], 300):
        assert ex.gold_sql.startswith("SELECT ") and not ex.gold_sql.endswith(";")
        if " JOIN " in ex.gold_sql:
            assert " AS T1 JOIN " in ex.gold_sql


def test_generation_is_deterministic():
    for schema in SCHEMAS:
        a = schema.make_tables(random.Random(7))
        b = schema.make_tables(random.Random(7))
        assert [t.batches for t in a] == [t.batches for t in b]


@pytest.mark.slow
def test_same_seed_same_dataset(builtin_dir, tmp_path):
    other = build_builtin(seed=0, out_dir=tmp_path / "again")
    for split in ("train", "dev", "test"):
        assert (other / f"{split}.jsonl").read_text() == (builtin_dir / f"{split}.jsonl").read_text()


def test_cached_build_is_reused(builtin_dir):
    stamp = (builtin_dir / "manifest.json").stat().st_mtime_ns
    assert build_builtin(seed=0) == builtin_dir
    assert builtin_dir.name == f"builtin-v{VERSION}-seed0"
    assert (builtin_dir / "manifest.json").stat().st_mtime_ns == stamp


# Output of seed 0 at the current VERSION. If this fails, the generated content changed: bump
# VERSION in sql_env/datasets/builtin/build.py (so caches rebuild) and update the hashes here.
PINNED = {"version": 5, "python": (3, 11),
          "sha256_16": {"train": "1ff70525f8064c85", "dev": "f4b5a318afb9a44c", "test": "5097c2919e2dc74c"}}


def test_content_change_bumps_version(builtin_dir):
    import hashlib
    import sys

    from sql_env.datasets.builtin.build import VERSION

    if sys.version_info[:2] != PINNED["python"]:
        pytest.skip("random's sequences are pinned for one Python version")
    digests = {s: hashlib.sha256((builtin_dir / f"{s}.jsonl").read_bytes()).hexdigest()[:16] for s in PINNED["sha256_16"]}
    assert (VERSION, digests) == (PINNED["version"], PINNED["sha256_16"])
