"""A small real DuckDB shared by the execution tests (sandbox, rewards, environment).

Import the fixtures into a test module (`from tests.sql_env.exec_fixtures import small_db`);
conftest.py belongs to the datasets work.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

SCHEMA = """
CREATE TABLE departments (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, city VARCHAR);
CREATE TABLE employees (
    id INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    dept_id INTEGER REFERENCES departments(id),
    salary DECIMAL(10, 2),
    hired DATE
);
INSERT INTO departments VALUES
    (1, 'Sales', 'Lyon'), (2, 'Research', 'Porto'), (3, 'Support', 'Lyon'), (4, 'Legal', NULL);
INSERT INTO employees
    SELECT i, 'emp' || i, 1 + i % 3, 1000 + (i * 37) % 500, DATE '2020-01-01' + INTERVAL (i) DAY
    FROM range(1, 301) t(i);
"""


def build_small_db(path: Path) -> Path:
    con = duckdb.connect(str(path))
    try:
        con.execute(SCHEMA)
    finally:
        con.close()
    return path


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_small_db(tmp_path_factory.mktemp("execdb") / "company.duckdb")
