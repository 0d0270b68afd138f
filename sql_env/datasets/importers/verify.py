"""Run each imported gold query in DuckDB, compare it with the source database, and report.

A gold query is kept when it runs in DuckDB and, where a SQLite reference exists, returns the
same result there (Spider-style comparison from `sql_env.match`). It is tried as transpiled by
sqlglot from the SQLite dialect first, then verbatim. Everything else is listed in the report.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from sql_env.datasets.store import write_json
from sql_env.match import order_matters, results_match

QUERY_TIMEOUT_S = 10.0
REPORT_FILE = "import_report.json"


@dataclass
class Problem:
    id: str
    db_id: str
    reason: str  # missing_database | source_error | duckdb_error | mismatch | context_error | bad_row
    detail: str = ""


@dataclass
class ImportReport:
    name: str
    format: str
    folder: str = ""
    total: int = 0
    ran: int = 0  # gold ran in DuckDB
    compared: int = 0  # ... and had a SQLite result to compare with
    matched: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    databases: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def verify(self, ex_id: str, db_id: str, sql: str, duck: duckdb.DuckDBPyConnection,
               ref: sqlite3.Connection | None) -> str | None:
        """Check one gold query (check_gold), tally it, and record a problem when it is not kept."""
        gold, reason, detail, matched = check_gold(sql, duck, ref)
        self.ran += reason in (None, "mismatch")
        self.compared += matched is not None
        self.matched += bool(matched)
        if gold is None:
            self.problems.append(Problem(ex_id, db_id, reason or "duckdb_error", detail))
        return gold

    def write(self, folder: Path) -> None:
        write_json(folder / REPORT_FILE, self.to_json())

    def summary(self, limit: int = 20) -> str:
        lines = [f"import {self.name} ({self.format}): {self.total} examples, {self.databases} databases",
                 f"  ran in DuckDB: {self.ran}/{self.total}; matched SQLite: {self.matched}/{self.compared}",
                 "  kept: " + ", ".join(f"{s}={n}" for s, n in self.kept.items())]
        if self.problems:
            lines.append(f"  not kept ({len(self.problems)}):")
            lines += [f"    {p.id} [{p.db_id}] {p.reason}: {p.detail}" for p in self.problems[:limit]]
            if len(self.problems) > limit:
                lines.append(f"    ... {len(self.problems) - limit} more in {REPORT_FILE}")
        lines += [f"  note: {n}" for n in self.notes[:limit]]
        return "\n".join(lines)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def run_duckdb(con: duckdb.DuckDBPyConnection, sql: str, timeout_s: float = QUERY_TIMEOUT_S) -> list[tuple]:
    """DuckDB has no statement timeout: interrupt from a timer instead."""
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.start()
    try:
        return con.execute(sql).fetchall()
    finally:
        timer.cancel()


def run_sqlite(con: sqlite3.Connection, sql: str, timeout_s: float = QUERY_TIMEOUT_S) -> list[tuple]:
    deadline = time.monotonic() + timeout_s
    con.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.set_progress_handler(None, 0)


def _ilike(node: exp.Expression) -> exp.Expression:
    return exp.ILike(**node.args) if isinstance(node, exp.Like) else node


def _int_div(node: exp.Expression) -> exp.Expression:
    return exp.IntDiv(this=node.this, expression=node.expression) if isinstance(node, exp.Div) else node


def candidates(sql: str, read: str = "sqlite") -> list[str]:
    """DuckDB versions of a source query, most faithful first: sqlglot's transpilation; then with
    SQLite semantics sqlglot leaves out (LIKE ignores ASCII case: ILIKE; `/` on integers
    truncates: `//`), which only the comparison with SQLite can confirm; the text verbatim."""
    out = []
    try:
        trees = [t for t in sqlglot.parse(sql, read=read) if t is not None]
        if len(trees) == 1:
            tree = trees[0]
            variants = [tree]
            if tree.find(exp.Like):
                variants.append(tree.copy().transform(_ilike))
            if tree.find(exp.Div):
                variants += [v.copy().transform(_int_div) for v in list(variants)]
            out = [v.sql(dialect="duckdb") for v in variants]
    except sqlglot.errors.SqlglotError:
        pass
    return list(dict.fromkeys(out + [sql.strip().rstrip(";")]))


def check_gold(sql: str, duck: duckdb.DuckDBPyConnection, ref: sqlite3.Connection | None,
               ) -> tuple[str | None, str | None, str, bool | None]:
    """(DuckDB SQL to keep or None, problem reason or None, detail, matched-or-None-if-no-reference)."""
    reference = None
    if ref is not None:
        try:
            reference = run_sqlite(ref, sql)
        except (sqlite3.Error, OverflowError, ValueError) as exc:
            return None, "source_error", _first_line(exc), None
    ran, last_error = None, ""
    for candidate in candidates(sql):
        try:
            rows = run_duckdb(duck, candidate)
        except (duckdb.Error, RuntimeError, OverflowError, ValueError) as exc:
            last_error = _first_line(exc)
            continue
        if reference is None:
            return candidate, None, "", None
        if results_match(rows, reference, order_matters(candidate)):
            return candidate, None, "", True
        ran = ran or (candidate, f"DuckDB {len(rows)} rows {rows[:2]!r} vs SQLite {len(reference)} rows "
                                  f"{reference[:2]!r}"[:300])
    if ran:
        return None, "mismatch", ran[1], False
    return None, "duckdb_error", last_error, None
