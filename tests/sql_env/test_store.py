import json

import duckdb
import pytest

from sql_env.datasets import DatasetError, database_path, dataset_dir, load_dataset, schema_ddl
from sql_env.datasets.folder import publish, staging_dir, write_json, write_split
from sql_env.types import Example


def make_dataset(folder, rows):
    staging = staging_dir(folder)
    con = duckdb.connect(str(staging / "databases" / "shop.duckdb"))
    con.execute("CREATE TABLE \"my items\" (id INTEGER PRIMARY KEY, label VARCHAR, price DOUBLE)")
    con.execute("CREATE TABLE sales (sale_id INTEGER PRIMARY KEY, item INTEGER REFERENCES \"my items\"(id))")
    con.execute("INSERT INTO \"my items\" VALUES (1, 'pen', 1.5), (2, 'ink''s', 3.0)")
    con.close()
    write_split(staging, "dev", [Example(**r) for r in rows])
    write_json(staging / "manifest.json", {"name": folder.name, "splits": {"dev": len(rows)}})
    return publish(staging, folder, force=False)


ROWS = [{"id": "a", "db_id": "shop", "question": "How many items?", "gold_sql": "SELECT COUNT(*) FROM \"my items\"",
         "evidence": "items live in my items"}]


def test_load_by_path_and_by_cached_name(tmp_path, cache_dir):
    folder = make_dataset(tmp_path / "mine", ROWS)
    [ex] = load_dataset(str(folder), "dev")
    assert ex == Example(**ROWS[0])
    named = make_dataset(cache_dir / "datasets" / "shopdata", ROWS)
    assert dataset_dir("shopdata") == named
    assert load_dataset("shopdata", "dev")[0].evidence == "items live in my items"


def test_errors_say_what_exists(tmp_path, cache_dir):
    folder = make_dataset(tmp_path / "mine", ROWS)
    with pytest.raises(DatasetError, match="no split 'train' .*it has: dev"):
        load_dataset(str(folder), "train")
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        load_dataset("nope", "dev")
    with pytest.raises(DatasetError, match="not a dataset folder"):
        dataset_dir(tmp_path)
    with pytest.raises(DatasetError, match="no database 'zoo'.*shop"):
        database_path(str(folder), "zoo")


def test_schema_ddl_is_compact_with_keys_and_quoting(tmp_path):
    folder = make_dataset(tmp_path / "mine", ROWS)
    ddl = schema_ddl(database_path(str(folder), "shop"))
    assert ddl.splitlines() == [
        'CREATE TABLE "my items" (id INT PRIMARY KEY, label TEXT, price REAL)',
        'CREATE TABLE sales (sale_id INT PRIMARY KEY, item INT REFERENCES "my items"(id))',
    ]
    with_rows = schema_ddl(database_path(str(folder), "shop"), sample_rows=1)
    assert "/* rows: (1, 'pen', 1.5) */" in with_rows


def test_publish_keeps_first_complete_copy(tmp_path):
    first = make_dataset(tmp_path / "d", ROWS)
    second = staging_dir(tmp_path / "d")
    write_json(second / "manifest.json", {"name": "other"})
    assert publish(second, first, force=False) == first
    assert json.loads((first / "manifest.json").read_text())["name"] == "d"
    assert not second.exists()
    third = staging_dir(tmp_path / "d")
    write_json(third / "manifest.json", {"name": "forced"})
    publish(third, first, force=True)
    assert json.loads((first / "manifest.json").read_text())["name"] == "forced"


def test_builtin_ddl_matches_schema(builtin_dir):
    ddl = schema_ddl(builtin_dir / "databases" / "retail.duckdb")
    assert "CREATE TABLE orders (order_id INT PRIMARY KEY, customer_id INT REFERENCES customers," in ddl
    assert len(ddl.splitlines()) == 4 and "--" not in ddl


def test_staging_leftovers_of_dead_builders_are_removed(tmp_path):
    dead = tmp_path / ".d.tmp-999999999"
    (dead / "databases").mkdir(parents=True)
    fresh = staging_dir(tmp_path / "d")
    assert not dead.exists() and fresh.is_dir()


def test_schema_ddl_while_another_reader_holds_the_file(tmp_path):
    """The sandbox keeps its own connections open; DDL must still be readable in-process."""
    folder = make_dataset(tmp_path / "mine", ROWS)
    db = database_path(str(folder), "shop")
    other = duckdb.connect(str(db), read_only=True, config={"threads": 1})
    try:
        assert schema_ddl(db, sample_rows=5).count("CREATE TABLE") == 2
        assert "/* rows:" not in schema_ddl(db, sample_rows=5).splitlines()[-1]  # empty table: no rows line
    finally:
        other.close()
