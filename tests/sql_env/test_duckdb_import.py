"""`data import duckdb`: users' own .duckdb files and a DuckDB-NSQL-style questions file become a
dataset whose every kept gold gives, through SQLEnvironment, what plain DuckDB gives."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from sql_env.datasets import load_dataset
from sql_env.datasets.importers import import_dataset
from sql_env.environment import SQLEnvironment

DATABASES = {
    "nyc": """
        CREATE TABLE taxi (id INTEGER PRIMARY KEY, zone VARCHAR, fare DOUBLE, pickup TIMESTAMP);
        INSERT INTO taxi SELECT i, ['Bronx', 'Queens', 'Manhattan'][1 + i % 3], 5 + (i * 7) % 23,
            TIMESTAMP '2024-01-01 00:00:00' + INTERVAL (i * 37) MINUTE FROM range(60) t(i);
    """,
    "hn": """
        CREATE TABLE posts (id INTEGER, title VARCHAR, tags VARCHAR[], meta STRUCT(score INTEGER, "by" VARCHAR));
        INSERT INTO posts VALUES (1, 'DuckDB 1.0', ['duckdb', 'db'], {'score': 90, 'by': 'ann'}),
            (2, 'Rust tips', ['rust'], {'score': 12, 'by': 'bo'}), (3, 'Ducks', ['duckdb'], {'score': 40, 'by': 'ann'});
    """,
}
QUESTIONS = [  # (db_id, query, expected problem or None)
    ("nyc", "SELECT count(*) FROM taxi", None),
    ("nyc", "SELECT zone, round(avg(fare), 2) AS fare FROM nyc.taxi GROUP BY zone ORDER BY zone", None),
    ("nyc", "SELECT id, fare FROM nyc.main.taxi WHERE fare > 20 ORDER BY id", None),
    ("nyc", "FROM taxi SELECT date_trunc('hour', pickup) AS h, count(*) GROUP BY h ORDER BY h LIMIT 3", None),
    ("hn", "SELECT title FROM posts WHERE list_contains(tags, 'duckdb') ORDER BY id", None),
    ("hn", "SELECT meta.by, tags[1], meta['score'] FROM posts ORDER BY id;", None),
    ("hn", "UPDATE posts SET title = 'x'", "refused"),
    ("hn", "CREATE TABLE t2 AS SELECT * FROM posts", "refused"),
    ("hn", "COPY posts TO 'posts.csv'", "refused"),
    ("hn", "SET threads = 4", "refused"),
    ("hn", "PRAGMA table_info('posts')", "refused"),
    ("hn", "SELECT * FROM read_csv('posts.csv')", "refused"),
    ("nyc", "SELECT * FROM taxi USING SAMPLE 10%", "nondeterministic"),
    ("nyc", "SELECT nope FROM taxi", "duckdb_error"),
    ("gone", "SELECT 1", "missing_database"),
]


def write_input(root: Path) -> Path:
    (root / "databases").mkdir(parents=True)
    for db_id, script in DATABASES.items():
        con = duckdb.connect(str(root / "databases" / f"{db_id}.duckdb"))
        con.execute(script)
        con.close()
    rows = [{"question": f"question {i}?", "query": q, "db_id": db} for i, (db, q, _) in enumerate(QUESTIONS)]
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_every_kept_gold_gives_what_plain_duckdb_gives(tmp_path: Path) -> None:
    src = write_input(tmp_path / "nsql")
    out = tmp_path / "out"
    report = import_dataset("duckdb", src, "nsql", out_dir=out)
    problems = {int(p.id.split("-")[1]): p.reason for p in report.problems}
    assert problems == {i: why for i, (_, _, why) in enumerate(QUESTIONS) if why}
    assert report.kept == {"dev": sum(why is None for _, _, why in QUESTIONS)}
    for db_id in DATABASES:  # copied byte for byte
        original = (src / "databases" / f"{db_id}.duckdb").read_bytes()
        assert (out / "databases" / f"{db_id}.duckdb").read_bytes() == original
        assert report.database_sha256[db_id] == hashlib.sha256(original).hexdigest()
    examples = load_dataset(str(out), "dev")
    assert examples[5].gold_sql == "SELECT meta.by, tags[1], meta['score'] FROM posts ORDER BY id"  # never rewritten
    with SQLEnvironment(str(out), workers=1) as env:
        for ex in examples:
            con = duckdb.connect(str(src / "databases" / f"{ex.db_id}.duckdb"), read_only=True)
            plain = con.execute(ex.gold_sql).fetchall()
            con.close()
            gold = env.gold(ex.id)
            assert gold.ok and gold.rows == plain, ex.gold_sql
            (score,) = env.score(ex.id, [ex.gold_sql])
            assert score.correct, (ex.gold_sql, score.metrics)


def test_cli_imports_duckdb_and_the_closing_hint_works(tmp_path: Path) -> None:
    from agent.cli import app

    runner = CliRunner(env={"COLUMNS": "200"})
    out = tmp_path / "out"
    result = runner.invoke(app, ["data", "import", "duckdb", str(write_input(tmp_path / "nsql")),
                                 "--name", "nsql", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and "refused" in result.output
    hint = result.output.strip().splitlines()[-1]
    command = hint.split("openrl-agent ", 1)[1].split()
    shown = runner.invoke(app, command)
    assert shown.exit_code == 0 and "6 examples in 2 databases" in shown.output


@pytest.mark.parametrize("layout", ["file", "nested"])
def test_a_questions_file_or_nested_databases_are_found(tmp_path: Path, layout: str) -> None:
    src = write_input(tmp_path / "nsql")
    if layout == "nested":
        (src / "databases" / "nyc.duckdb").rename(src / "databases" / "nyc-dir.duckdb")
        (src / "deep" / "nyc").mkdir(parents=True)
        (src / "databases" / "nyc-dir.duckdb").rename(src / "deep" / "nyc" / "nyc.duckdb")
    path = src / "dev.jsonl" if layout == "file" else src
    report = import_dataset("duckdb", path, "nsql", out_dir=tmp_path / "out")
    assert report.kept == {"dev": 6}
