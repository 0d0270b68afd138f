"""An import never changes anything: golds that write, alter or attach are refused before any engine
runs them, the published databases are the bytes the import copied, no file appears outside the
output folder, and a rewrite no reference engine confirmed never replaces the user's query."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import duckdb
import pytest

from sql_env.datasets import load_dataset
from sql_env.datasets.importers import import_dataset

CONTEXT = ("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER); "
           "INSERT INTO t VALUES (1, 10), (2, 20), (3, 30);")
WRITERS = [
    "UPDATE t SET x = 0 WHERE id = 1",
    "DELETE FROM t WHERE id = 2",
    "ALTER TABLE t ADD COLUMN y INTEGER",
    "ATTACH 'who.ddb' AS who",
    "CREATE TABLE u AS SELECT * FROM t",
    "COPY t TO 'leak.csv'",
]
READER = ("How many rows has t, and what is the sum of x?", "SELECT count(*), sum(x) FROM t")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def context_rows() -> list[dict]:
    rows = [{"sql_prompt": f"Change the data, way {i}.", "sql_context": CONTEXT, "sql": sql}
            for i, sql in enumerate(WRITERS)]
    return rows + [{"sql_prompt": READER[0], "sql_context": CONTEXT, "sql": READER[1]}]


def spider_folder(root: Path) -> Path:
    db = root / "database" / "shop" / "shop.sqlite"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.executescript(CONTEXT)
    con.commit()
    con.close()
    rows = [{"db_id": "shop", "question": f"Change the data, way {i}.", "query": sql} for i, sql in enumerate(WRITERS)]
    rows.append({"db_id": "shop", "question": READER[0], "query": READER[1]})
    (root / "dev.json").write_text(json.dumps(rows))
    return root


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory during the import: an ATTACH gold would create its file here."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def check_refused_and_intact(report, out: Path, db_file: Path) -> None:
    refused = {p.id: (p.reason, p.detail) for p in report.problems}
    assert len(refused) == len(WRITERS) and all(reason == "refused" for reason, _ in refused.values())
    assert "UPDATE" in refused["dev-00000"][1] and "ATTACH" in refused["dev-00003"][1]
    (kept,) = load_dataset(str(out), "dev")
    assert kept.question == READER[0]
    con = duckdb.connect(str(db_file), read_only=True)
    assert con.execute(kept.gold_sql).fetchall() == [(3, 60)]  # nothing updated, deleted or altered
    assert [r[0] for r in con.execute("DESCRIBE t").fetchall()] == ["id", "x"]
    assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchone() == (1,)
    con.close()
    copied = json.loads((out / "manifest.json").read_text())["database_sha256"]
    assert copied[db_file.stem] == sha256(db_file)  # byte-identical to what the import copied


def test_context_golds_that_write_are_refused_and_change_nothing(tmp_path: Path, workdir: Path) -> None:
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in context_rows()))
    before = files_under(tmp_path)
    out = tmp_path / "out"
    report = import_dataset("context", src, "safe-ctx", out_dir=out, split="dev")
    (db_file,) = (out / "databases").glob("*.duckdb")
    check_refused_and_intact(report, out, db_file)
    assert files_under(tmp_path) - before - files_under(out) == {out}  # nothing outside --out


def test_spider_golds_that_write_are_refused_and_change_nothing(tmp_path: Path, workdir: Path) -> None:
    src = spider_folder(tmp_path / "spider")
    sqlite_hash = sha256(src / "database" / "shop" / "shop.sqlite")
    before = files_under(tmp_path)
    out = tmp_path / "out"
    report = import_dataset("spider", src, "safe-spider", out_dir=out)
    check_refused_and_intact(report, out, out / "databases" / "shop.duckdb")
    assert sha256(src / "database" / "shop" / "shop.sqlite") == sqlite_hash
    assert files_under(tmp_path) - before - files_under(out) == {out}


# DuckDB-only contexts (no SQLite reference to compare with): sqlglot's rewrites of these golds
# change their meaning, so the user's text must be what is kept.
DUCK_ONLY = [
    ("CREATE TABLE people (name VARCHAR, phone_numbers VARCHAR[]); "
     "INSERT INTO people VALUES ('ann', ['555-1', '555-2']);",
     "SELECT phone_numbers[1] FROM people", [("555-1",)]),
    ("CREATE SEQUENCE ids; CREATE TABLE mail (body JSON); INSERT INTO mail VALUES ('{\"from\": \"bob\"}');",
     "SELECT body->>'from' FROM mail", [("bob",)]),
]


@pytest.mark.parametrize(("context", "gold", "answer"), DUCK_ONLY)
def test_an_unverified_rewrite_never_replaces_the_users_query(tmp_path: Path, workdir: Path, context: str,
                                                              gold: str, answer: list) -> None:
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"question": "q?", "context": context, "answer": gold}) + "\n")
    out = tmp_path / "out"
    import_dataset("context", src, "duck-only", out_dir=out, split="dev")
    (kept,) = load_dataset(str(out), "dev")
    assert kept.gold_sql == gold
    con = duckdb.connect(str(next((out / "databases").glob("*.duckdb"))), read_only=True)
    assert con.execute(kept.gold_sql).fetchall() == answer
    con.close()
