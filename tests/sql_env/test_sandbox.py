"""The sandbox against a real DuckDB file: normal queries, every attack in issue 3, and the limits."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from sql_env.sandbox import Sandbox
from tests.sql_env.exec_fixtures import small_db  # noqa: F401

TIMEOUT_S = 0.3


@pytest.fixture()
def sandbox(small_db: Path):  # noqa: F811
    with Sandbox(small_db, timeout_s=TIMEOUT_S, max_rows=500) as box:
        yield box


def employee_count(box: Sandbox) -> int:
    result = box.run("SELECT count(*) FROM employees")
    assert result.status == "ok", result.error
    return result.rows[0][0]


# -- ordinary outcomes ---------------------------------------------------------------------------
def test_ok_query_returns_rows_columns_and_time(sandbox: Sandbox) -> None:
    result = sandbox.run("SELECT name, city FROM departments WHERE city = 'Lyon' ORDER BY id")
    assert result.status == "ok" and result.ok
    assert result.rows == [("Sales", "Lyon"), ("Support", "Lyon")]
    assert result.columns == ["name", "city"]
    assert result.error is None and 0 < result.elapsed_s < 5


@pytest.mark.parametrize(
    "sql",
    [
        "WITH d AS (SELECT * FROM departments) SELECT count(*) FROM d",
        "-- leading comment\n/* block */ SELECT count(*) FROM departments;",
        "(SELECT count(*) FROM departments)",
        "SELECT count(*) FROM departments UNION ALL SELECT 4",
    ],
)
def test_select_and_with_forms_run(sandbox: Sandbox, sql: str) -> None:
    result = sandbox.run(sql)
    assert result.status == "ok", result.error
    assert result.rows[0] == (4,)


@pytest.mark.parametrize(
    ("sql", "status"),
    [
        ("SELEC name FROM departments", "syntax_error"),
        ("SELECT name FROM departments WHERE", "syntax_error"),
        ("", "syntax_error"),
        ("  ; -- nothing", "syntax_error"),
        ("SELECT nope FROM departments", "schema_error"),
        ("SELECT * FROM no_such_table", "schema_error"),
        ("SELECT CAST(name AS INTEGER) FROM departments", "runtime_error"),
    ],
)
def test_errors_are_classified(sandbox: Sandbox, sql: str, status: str) -> None:
    result = sandbox.run(sql)
    assert result.status == status
    assert result.error and result.rows == []


# -- attacks: nothing outside the database is read or written -----------------------------------
def test_copy_export_attach_write_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    attacks = {
        f"COPY employees TO '{tmp_path}/out.csv'": tmp_path / "out.csv",
        f"COPY (SELECT * FROM employees) TO '{tmp_path}/out2.parquet' (FORMAT parquet)": tmp_path / "out2.parquet",
        f"EXPORT DATABASE '{tmp_path}/dump'": tmp_path / "dump",
        f"ATTACH '{tmp_path}/other.duckdb' AS other": tmp_path / "other.duckdb",
    }
    for sql, target in attacks.items():
        result = sandbox.run(sql)
        assert result.status == "forbidden", (sql, result)
        assert not target.exists(), sql
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sql", ["INSTALL httpfs", "LOAD httpfs", "INSTALL spatial FROM community", "FORCE INSTALL json"])
def test_extensions_cannot_be_installed_or_loaded(sandbox: Sandbox, sql: str) -> None:
    assert sandbox.run(sql).status == "forbidden"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_csv_auto('/etc/passwd', header = false)",
        "SELECT content FROM read_text('/etc/passwd')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "WITH x AS (SELECT * FROM read_text('/etc/passwd')) SELECT * FROM x",
        "SELECT * FROM read_parquet('/etc/passwd')",
    ],
)
def test_file_reading_table_functions_are_blocked(sandbox: Sandbox, sql: str) -> None:
    result = sandbox.run(sql)
    assert result.status == "forbidden", result
    assert result.rows == [] and "root" not in (result.error or "")


def test_replacement_scan_of_a_path_reads_nothing(sandbox: Sandbox) -> None:
    result = sandbox.run("SELECT * FROM '/etc/passwd'")
    assert result.status in ("forbidden", "schema_error") and result.rows == []


@pytest.mark.parametrize(
    "sql",
    [
        "SET memory_limit = '64GB'",
        "SET threads = 64",
        "SET enable_external_access = true",
        "RESET memory_limit",
        "SET lock_configuration = false",
        "PRAGMA database_list",
        "PRAGMA enable_profiling",
        "CALL pragma_version()",
        "DESCRIBE employees",
        "SHOW TABLES",
        "SUMMARIZE employees",
        "EXPLAIN ANALYZE SELECT 1",
        "CHECKPOINT",
        "USE memory",
        "DETACH sandbox_db",
    ],
)
def test_settings_pragmas_and_non_select_statements_are_forbidden(sandbox: Sandbox, sql: str) -> None:
    result = sandbox.run(sql)
    assert result.status == "forbidden", result
    assert "SELECT or WITH" in result.error


def test_configuration_is_locked_down(sandbox: Sandbox) -> None:
    result = sandbox.run(
        "SELECT current_setting('lock_configuration'), current_setting('enable_external_access'), "
        "current_setting('autoload_known_extensions'), current_setting('autoinstall_known_extensions'), "
        "current_setting('threads'), current_setting('temp_directory'), current_setting('memory_limit')"
    )
    assert result.status == "ok", result.error
    assert result.rows == [(True, False, False, False, 1, "", "244.1 MiB")]
    attached = sandbox.run("SELECT readonly FROM duckdb_databases() WHERE path IS NOT NULL")
    assert attached.rows == [(True,)]


def test_other_readers_of_the_same_file_in_process_do_not_collide(small_db: Path) -> None:  # noqa: F811
    import duckdb

    before = duckdb.connect(str(small_db), read_only=True)
    try:
        with Sandbox(small_db, memory_limit="128MB") as a, Sandbox(small_db, memory_limit="64MB") as b:
            after = duckdb.connect(str(small_db), read_only=True)
            assert employee_count(a) == employee_count(b) == 300
            assert after.execute("SELECT count(*) FROM departments").fetchall() == [(4,)]
            after.close()
    finally:
        before.close()


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE employees",
        "INSERT INTO employees VALUES (999, 'x', 1, 1, DATE '2020-01-01')",
        "UPDATE employees SET salary = 0",
        "DELETE FROM employees",
        "CREATE TABLE t AS SELECT 1",
        "CREATE TEMP TABLE t AS SELECT 1",
        "CREATE TEMP MACRO f(x) AS x + 1",
        "ALTER TABLE employees ADD COLUMN z INTEGER",
        "WITH x AS (SELECT 1) INSERT INTO departments SELECT 9, 'x', 'y' FROM x",
        "SELECT 1; DROP TABLE employees",
        "SELECT 1; SELECT 2",
        "SELECT * FROM query('DROP TABLE employees')",
    ],
)
def test_writes_and_multiple_statements_change_nothing(sandbox: Sandbox, sql: str) -> None:
    result = sandbox.run(sql)
    assert result.status in ("forbidden", "syntax_error"), result
    assert employee_count(sandbox) == 300


def test_database_file_is_byte_identical_after_attacks(small_db: Path, tmp_path: Path) -> None:  # noqa: F811
    before = hashlib.sha256(small_db.read_bytes()).hexdigest()
    with Sandbox(small_db, timeout_s=TIMEOUT_S) as box:
        for sql in ["DROP TABLE employees", "CHECKPOINT", "UPDATE employees SET salary = 0", "SELECT 1"]:
            box.run(sql)
    assert hashlib.sha256(small_db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in small_db.parent.iterdir()) == [small_db.name]


# -- limits: time, rows, memory, size, encoding --------------------------------------------------
def test_never_ending_recursive_cte_times_out_and_connection_survives(sandbox: Sandbox) -> None:
    start = time.monotonic()
    result = sandbox.run("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r")
    assert result.status == "timeout"
    assert TIMEOUT_S <= time.monotonic() - start < TIMEOUT_S + 2
    assert employee_count(sandbox) == 300  # the same thread's reused connection still works


def test_unbounded_recursive_cte_streamed_hits_row_cap(sandbox: Sandbox) -> None:
    result = sandbox.run("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT n FROM r")
    assert result.status == "too_many_rows" and result.rows == []
    assert "500" in result.error


def test_huge_cross_join_stops_at_row_cap_without_materialising(sandbox: Sandbox) -> None:
    result = sandbox.run("SELECT * FROM employees a, employees b, employees c, employees d")  # 8.1e9 rows
    assert result.status == "too_many_rows"
    assert result.elapsed_s < TIMEOUT_S


def test_huge_cross_join_aggregate_times_out(sandbox: Sandbox) -> None:
    result = sandbox.run("SELECT count(*) FROM employees a, employees b, employees c, employees d WHERE a.salary + b.salary > c.salary + d.salary")
    assert result.status == "timeout"


def test_memory_hog_hits_memory_limit_not_the_process(small_db: Path) -> None:  # noqa: F811
    with Sandbox(small_db, timeout_s=10) as box:
        result = box.run("SELECT list(range) FROM range(1000000000)")
        assert result.status == "runtime_error" and "Out of Memory" in result.error
        assert employee_count(box) == 300


def test_ten_megabyte_string_results_and_queries(sandbox: Sandbox, small_db: Path) -> None:  # noqa: F811
    value = sandbox.run("SELECT repeat('x', 10000000) AS s")
    assert value.status == "ok" and len(value.rows[0][0]) == 10_000_000
    huge_query = "SELECT '" + "x" * 10_000_000 + "' AS s"
    refused = sandbox.run(huge_query)
    assert refused.status == "forbidden" and "10,000,014 characters" in refused.error
    with Sandbox(small_db, timeout_s=5, max_sql_chars=20_000_000) as roomy:
        ran = roomy.run(huge_query)
    assert ran.status == "ok" and len(ran.rows[0][0]) == 10_000_000


@pytest.mark.parametrize(
    ("sql", "status"),
    [
        (b"SELECT '\xff\xfe' AS s", "syntax_error"),
        ("SELECT '\udcff' AS s", "syntax_error"),
        (b"SELECT name FROM departments WHERE id = 1", "ok"),
        ("SELECT decode('\\xff'::BLOB)", "runtime_error"),
        ("SELECT 'a\x00b' AS s", "ok"),
    ],
)
def test_invalid_utf8_and_odd_bytes(sandbox: Sandbox, sql: str | bytes, status: str) -> None:
    assert sandbox.run(sql).status == status


def test_run_never_raises_on_garbage_input(sandbox: Sandbox) -> None:
    assert sandbox.run(None).status == "runtime_error"  # type: ignore[arg-type]
    assert sandbox.run(12).status == "runtime_error"  # type: ignore[arg-type]


# -- reuse and batching ---------------------------------------------------------------------------
def test_run_many_keeps_order_and_reuses_one_connection_per_worker(small_db: Path) -> None:  # noqa: F811
    with Sandbox(small_db, timeout_s=TIMEOUT_S, workers=2) as box:
        queries = [f"SELECT {i} + count(*) FROM departments" for i in range(40)]
        queries[7] = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
        queries[9] = "DROP TABLE employees"
        results = box.run_many(queries)
        assert [r.status for r in results].count("ok") == 38
        assert results[7].status == "timeout" and results[9].status == "forbidden"
        assert [r.rows[0][0] for i, r in enumerate(results) if i not in (7, 9)] == [
            i + 4 for i in range(40) if i not in (7, 9)
        ]
        box.run_many(queries[:10])
        assert box.connections_opened <= 2


def test_timeout_in_one_thread_does_not_interrupt_another(small_db: Path) -> None:  # noqa: F811
    with Sandbox(small_db, timeout_s=TIMEOUT_S, workers=2) as box:
        slow = "SELECT count(*) FROM employees a, employees b, employees c, employees d"
        results = box.run_many([slow] + ["SELECT count(*) FROM employees"] * 200)
    assert results[0].status == "timeout"
    assert all(r.status == "ok" and r.rows == [(300,)] for r in results[1:])


def test_bad_construction_says_the_fix(small_db: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(FileNotFoundError, match="build or import"):
        Sandbox(tmp_path / "missing.duckdb")
    with pytest.raises(ValueError, match="timeout_s"):
        Sandbox(small_db, timeout_s=0)
    with pytest.raises(ValueError, match="max_rows"):
        Sandbox(small_db, max_rows=0)


def test_closed_sandbox_reports_instead_of_raising(small_db: Path) -> None:  # noqa: F811
    box = Sandbox(small_db)
    box.close()
    box.close()  # idempotent
    result = box.run("SELECT 1")
    assert result.status == "runtime_error" and "closed" in result.error


def test_a_query_stuck_in_one_huge_vector_still_answers_within_its_own_time_limit(small_db: Path) -> None:  # noqa: F811
    """DuckDB honours an interrupt only between vectors: this one ran 7.3 s under a 1 s limit."""
    with Sandbox(small_db, timeout_s=1.0) as box:
        start = time.monotonic()
        result = box.run("SELECT repeat('x', 2000000000)")
        assert result.status == "timeout"
        assert time.monotonic() - start < 1.0 + 0.5
        assert employee_count(box) == 300  # the caller's next query gets a fresh connection
