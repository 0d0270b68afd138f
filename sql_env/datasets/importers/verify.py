"""Check each imported gold query the way training will run it, compare it with the source, report.

Nothing here can change a database or create a file: a gold runs only in the `Sandbox` the trainer
uses (the DuckDB file attached read-only, external access off, one SELECT or WITH statement), so a
gold the sandbox would refuse (UPDATE, DELETE, ALTER, ATTACH, COPY, SET, PRAGMA, file reads) is
left out with that reason before it reaches any engine; the SQLite reference runs under an
authorizer that allows reading only.

A gold query is kept when it runs in the sandbox and, where a SQLite reference exists, returns the
same result there (Spider-style comparison from `sql_env.match`). With a reference, sqlglot's
transpilation from the SQLite dialect is tried first, then variants, then the text verbatim, and
the comparison confirms the one kept. Without a reference nothing can confirm a rewrite, so only
the user's own text is kept; a gold that runs only as rewritten is left out and the report says so.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from sql_env.datasets.folder import write_json
from sql_env.datasets.importers.sqlite_semantics import TextNumbers, as_numbers, as_sqlite
from sql_env.match import order_matters, results_match
from sql_env.sandbox import Sandbox

QUERY_TIMEOUT_S = 10.0
REPORT_FILE = "import_report.json"


@dataclass
class Problem:
    id: str
    db_id: str
    # missing_database | source_error | duckdb_error | mismatch | context_error | bad_row | refused
    # | unverified_rewrite | timeout | too_many_rows
    reason: str
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
    database_sha256: dict[str, str] = field(default_factory=dict)  # each file as the import wrote it

    def copied(self, db_id: str, path: Path) -> None:
        """Record a database file as written, before any gold query reads it."""
        self.database_sha256[db_id] = file_sha256(path)

    def check_unchanged(self, folder: Path) -> None:
        for db_id, digest in self.database_sha256.items():
            if file_sha256(folder / "databases" / f"{db_id}.duckdb") != digest:
                raise RuntimeError(f"database {db_id} changed while its gold queries were checked; "
                                   "this is a bug in the importer, please report it")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def verify(self, ex_id: str, db_id: str, sql: str, box: Sandbox,
               ref: sqlite3.Connection | None) -> str | None:
        """Check one gold query (check_gold), tally it, and record a problem when it is not kept."""
        gold, reason, detail, matched = check_gold(sql, box, ref)
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
                 f"  ran in DuckDB: {self.ran}/{self.total}; " + (
                     f"matched SQLite: {self.matched}/{self.compared}" if self.compared else "no SQLite reference"),
                 "  kept: " + ", ".join(f"{s}={n}" for s, n in self.kept.items())]
        if self.problems:
            lines.append(f"  not kept ({len(self.problems)}):")
            lines += [f"    {p.id} [{p.db_id}] {p.reason}: {p.detail}" for p in self.problems[:limit]]
            if len(self.problems) > limit:
                lines.append(f"    ... {len(self.problems) - limit} more in {REPORT_FILE}")
        lines += [f"  note: {n}" for n in self.notes[:limit]]
        return "\n".join(lines)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                 getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


def _read_only(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def run_sqlite(con: sqlite3.Connection, sql: str, timeout_s: float = QUERY_TIMEOUT_S) -> list[tuple]:
    """Rows of a read-only query; anything that would write, attach or change a setting is refused
    when SQLite prepares it ("not authorized"), before it runs."""
    deadline = time.monotonic() + timeout_s
    con.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    con.set_authorizer(_read_only)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.set_authorizer(None)
        con.set_progress_handler(None, 0)


def import_sandbox(db_path: Path) -> Sandbox:
    """The sandbox gold queries are checked in: training's limits, a longer timeout."""
    return Sandbox(db_path, timeout_s=QUERY_TIMEOUT_S, workers=1)


def _ilike(node: exp.Expression) -> exp.Expression:
    return exp.ILike(**node.args) if isinstance(node, exp.Like) else node


def _int_div(node: exp.Expression) -> exp.Expression:
    return exp.IntDiv(this=node.this, expression=node.expression) if isinstance(node, exp.Div) else node


def candidates(sql: str, read: str = "sqlite", text: TextNumbers | None = None) -> list[str]:
    """DuckDB versions of a source query, most faithful first: sqlglot's transpilation; then with
    SQLite semantics sqlglot leaves out (LIKE ignores ASCII case: ILIKE; `/` on integers
    truncates: `//`; numbers stored as text: sqlite_semantics), which only the comparison with
    SQLite can confirm; the text verbatim."""
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
            if text is not None and text.touched(tree):
                variants += [rewrite(v, text.text) for rewrite in (as_sqlite, as_numbers) for v in list(variants)]
            out = [v.sql(dialect="duckdb") for v in variants]
    except sqlglot.errors.SqlglotError:
        pass
    return list(dict.fromkeys(out + [sql.strip().rstrip(";")]))


_TEXT_NUMBERS: weakref.WeakKeyDictionary[Sandbox, TextNumbers] = weakref.WeakKeyDictionary()


def _text_numbers(box: Sandbox) -> TextNumbers:
    found = _TEXT_NUMBERS.get(box)
    if found is None:
        found = _TEXT_NUMBERS[box] = TextNumbers.of(box)
    return found


def _stored_as_text(sql: str, text: TextNumbers, catalog: str) -> str:
    """'numbers stored as text in column db.table.col: ' when the query names such a column."""
    try:
        touched = text.touched(sqlglot.parse_one(sql, read="sqlite"))
    except sqlglot.errors.SqlglotError:
        return ""
    return f"numbers stored as text in column {', '.join(f'{catalog}.{c}' for c in touched)}: " if touched else ""


def check_gold(sql: str, box: Sandbox, ref: sqlite3.Connection | None,
               ) -> tuple[str | None, str | None, str, bool | None]:
    """(DuckDB SQL to keep or None, problem reason or None, detail, matched-or-None-if-no-reference)."""
    refusal = box.refusal(sql)
    if refusal is not None and refusal.status == "forbidden":
        return None, "refused", f"the sandbox refuses it at training time: {refusal.error}", None
    reference = None
    if ref is not None:
        try:
            reference = run_sqlite(ref, sql)
        except (sqlite3.Error, OverflowError, ValueError) as exc:
            if "not authorized" in str(exc):
                return None, "refused", "not a read-only query (SQLite refused to prepare it for reading)", None
            return None, "source_error", _first_line(exc), None
    if reference is None:
        return _check_unreferenced(sql, box)
    ran, last, tied = None, ("duckdb_error", ""), None
    text = _text_numbers(box)
    for candidate in candidates(sql, text=text):
        execution = box.run(candidate)
        if not execution.ok:
            last = _failure(execution)
            continue
        ordered = order_matters(candidate)
        if results_match(execution.rows, reference, ordered):
            return candidate, None, "", True
        if ordered and tied is None and results_match(execution.rows, reference, False):
            tied = candidate  # the same rows in another order: rows that tie on the ORDER BY keys
        rows = execution.rows
        ran = ran or (candidate, f"DuckDB {len(rows)} rows {rows[:2]!r} vs SQLite {len(reference)} rows "
                                  f"{reference[:2]!r}"[:300])
    if tied is not None:
        return tied, None, "", True
    cause = _stored_as_text(sql, text, box.catalog)
    if ran:
        return None, "mismatch", cause + ran[1], False
    return None, last[0], cause + last[1], None


def _check_unreferenced(sql: str, box: Sandbox) -> tuple[str | None, str | None, str, bool | None]:
    """No engine to compare with: the user's text runs as it is, or the example is left out."""
    original = sql.strip().rstrip(";").strip()
    execution = box.run(original)
    if execution.ok:
        return original, None, "", None
    reason, detail = _failure(execution)
    for candidate in candidates(sql):
        if candidate != original and box.run(candidate).ok:
            return None, "unverified_rewrite", (
                f"{detail}; it runs only as rewritten by sqlglot ({candidate[:150]}), which no reference "
                "engine could confirm means the same, so the original is not replaced"), None
    return None, reason, detail, None


def _failure(execution) -> tuple[str, str]:
    reason = {"timeout": "timeout", "too_many_rows": "too_many_rows", "forbidden": "refused"}.get(
        execution.status, "duckdb_error")
    return reason, (execution.error or execution.status).splitlines()[0][:200]
