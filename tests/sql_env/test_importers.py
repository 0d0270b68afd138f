import json

import duckdb
import pytest

from sql_env.datasets import DatasetError, database_path, load_dataset, schema_ddl
from sql_env.datasets.importers import REPORT_FILE, import_dataset, verify
from sql_env.datasets.importers.verify import check_gold, import_sandbox
from tests.fixtures.text2sql_fixtures import write_bird, write_context, write_spider
from tests.sql_env.exec_fixtures import build_small_db


def reasons(report):
    return sorted((p.id, p.reason) for p in report.problems)


def test_spider_import_converts_verifies_and_reports(tmp_path, cache_dir):
    report = import_dataset("spider", write_spider(tmp_path / "spider"), "fx-spider", force=True)
    assert (report.total, report.ran, report.compared, report.matched) == (15, 13, 13, 12)
    assert reasons(report) == [("train-00006", "mismatch"), ("train-00007", "source_error"),
                               ("train-00008", "missing_database")]
    assert report.kept == {"train": 8, "dev": 4}  # train_spider.json + train_others.json
    folder = cache_dir / "datasets" / "fx-spider"
    assert json.loads((folder / REPORT_FILE).read_text())["matched"] == 12
    assert "train-00006 [concert_singer] mismatch" in report.summary()

    golds = {e.question: e.gold_sql for e in load_dataset("fx-spider", "train")}
    assert golds["Show the song names of singers from France."] == \
        "SELECT \"Song Name\" FROM singer WHERE Country = 'France'"
    # SQLite semantics sqlglot leaves out, confirmed against SQLite's own answer:
    assert "ILIKE 'j%'" in golds["Which singers have names starting with j?"]
    assert "// 1000" in golds["How many thousands of seats do the stadiums have?"]

    ddl = schema_ddl(database_path("fx-spider", "concert_singer"))
    assert '"Song Name" TEXT' in ddl and "Stadium_ID INT REFERENCES stadium" in ddl
    # A dangling foreign key (SQLite does not enforce them) drops that table's keys, noted.
    assert any("messy.alerts: keys dropped" in n for n in report.notes)
    con = duckdb.connect(str(database_path("fx-spider", "messy")), read_only=True)
    assert con.execute("SELECT typeof(value) FROM readings LIMIT 1").fetchone() == ("VARCHAR",)
    assert con.execute("SELECT COUNT(*) FROM alerts").fetchone() == (2,)
    con.close()


def test_bird_import_keeps_evidence_and_difficulty(tmp_path):
    report = import_dataset("bird", write_bird(tmp_path / "bird"), "fx-bird", out_dir=tmp_path / "out")
    assert (report.total, report.matched, report.kept) == (3, 3, {"dev": 3})
    first = load_dataset(str(tmp_path / "out"), "dev")[0]
    assert first.evidence.startswith("Eligible free rate") and first.difficulty == "medium"
    assert '"Free Meal Count (K-12)"' in first.gold_sql


def test_context_import_dedups_contexts(tmp_path):
    path = write_context(tmp_path / "ctx" / "train.jsonl")
    report = import_dataset("context", path, "fx-ctx", out_dir=tmp_path / "out")
    assert (report.total, report.ran, report.matched, report.databases) == (6, 4, 4, 2)
    assert reasons(report) == [("train-00003", "context_error"), ("train-00004", "source_error")]
    examples = load_dataset(str(tmp_path / "out"), "train")
    assert len({e.db_id for e in examples}) == 2  # four rows, whitespace-different copies of one context
    assert examples[-1].question == "What ships were launched after 2005?"  # sql-create-context field names
    assert examples[0].family == "basic SQL"


@pytest.mark.parametrize("args, message", [
    (("nosuch", ".", "x"), "unknown format"),
    (("spider", ".", "bad name"), "bad dataset name"),
    (("spider", ".", "builtin"), "bad dataset name"),
    (("spider", "/does/not/exist", "x"), "does not exist"),
])
def test_user_errors(args, message):
    with pytest.raises(DatasetError, match=message):
        import_dataset(*args)


def test_existing_dataset_needs_force_and_empty_folder_fails(tmp_path):
    write_bird(tmp_path / "bird")
    import_dataset("bird", tmp_path / "bird", "b", out_dir=tmp_path / "out")
    with pytest.raises(DatasetError, match="--force"):
        import_dataset("bird", tmp_path / "bird", "b", out_dir=tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no question files"):
        import_dataset("spider", tmp_path / "empty", "e", out_dir=tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_a_gold_that_never_ends_is_left_out_as_a_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "QUERY_TIMEOUT_S", 0.2)
    forever = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT COUNT(*) FROM r"
    with import_sandbox(build_small_db(tmp_path / "company.duckdb")) as box:
        assert check_gold(forever, box, None)[:2] == (None, "timeout")
        assert check_gold("SELECT 42", box, None) == ("SELECT 42", None, "", None)
