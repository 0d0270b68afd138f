"""Copy a SQLite database into a new DuckDB file with Python's sqlite3 (no DuckDB extension).

SQLite is dynamically typed and does not enforce much, so real-world files (Spider, BIRD) hold
text in INTEGER columns, duplicate primary keys and dangling foreign keys. Each column gets the
DuckDB type its declared affinity implies unless its values disagree (then DOUBLE or VARCHAR),
and a table whose data violates its keys is created without them; every such downgrade is
returned as a note for the import report. Dates stay text, as in SQLite, so gold queries that
compare them as strings keep their meaning.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import duckdb

from sql_env.datasets.store import DatasetError


def _affinity(declared: str) -> str:
    """SQLite's type-affinity rules (https://www.sqlite.org/datatype3.html, section 3.1)."""
    d = declared.upper()
    if "INT" in d:
        return "BIGINT"
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
        return "VARCHAR"
    if "BLOB" in d:
        return "BLOB"
    if any(k in d for k in ("REAL", "FLOA", "DOUB")):
        return "DOUBLE"
    if any(k in d for k in ("DATE", "TIME", "BOOL")) or not d:
        return "VARCHAR" if d else ""
    return "DOUBLE"  # NUMERIC, DECIMAL(...)


def _column_type(declared: str, values: list) -> str:
    """The declared affinity when the values fit it, else what the values actually are."""
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return _affinity(declared) or "VARCHAR"
    if bytes in kinds:
        return "BLOB" if kinds == {bytes} else "VARCHAR"
    if str in kinds:
        return "VARCHAR"
    if kinds <= {int}:
        return "DOUBLE" if _affinity(declared) == "DOUBLE" else "BIGINT"
    return "DOUBLE"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: object, dtype: str) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"from_hex('{value.hex()}')"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"'{value}'::DOUBLE"
    if isinstance(value, int) and dtype != "VARCHAR":
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _table_ddl(name: str, cols: list[tuple[str, str, int]], fks: list[tuple], keys: bool) -> str:
    parts = [f"{quote(c)} {t}" for c, t, _ in cols]
    pk = [c for c, _, pos in sorted(cols, key=lambda x: x[2]) if pos > 0]
    if keys and pk:
        parts.append(f"PRIMARY KEY ({', '.join(map(quote, pk))})")
    if keys:
        for ref_table, pairs in fks:
            src = ", ".join(quote(a) for a, _ in pairs)
            dst = ", ".join(quote(b) for _, b in pairs)
            parts.append(f"FOREIGN KEY ({src}) REFERENCES {quote(ref_table)}({dst})")
    return f"CREATE TABLE {quote(name)} ({', '.join(parts)})"


def copy_sqlite(sqlite_path: Path, duck_path: Path) -> list[str]:
    """Copy every table; returns notes on what could not be kept as declared."""
    notes: list[str] = []
    src = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
    src.text_factory = lambda b: b.decode("utf-8", errors="replace")
    dst = duckdb.connect(str(duck_path))
    try:
        try:
            tables = [r[0] for r in src.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
        except sqlite3.DatabaseError as exc:
            raise DatasetError(f"{sqlite_path} is not a SQLite database ({exc}); check the dataset folder") from None
        created: set[str] = set()
        keyed: set[str] = set()  # tables created with their primary key (FK targets need one)
        for table in _parents_first(src, tables):
            rows = src.execute(f"SELECT * FROM {quote(table)}").fetchall()
            info = src.execute(f"PRAGMA table_info({quote(table)})").fetchall()  # cid, name, type, notnull, dflt, pk
            cols = [(c[1], _column_type(c[2] or "", [r[i] for r in rows]), c[5]) for i, c in enumerate(info)]
            fks = _foreign_keys(src, table, created & keyed, {c[1].lower(): c[1] for c in info})
            for keys in (True, False):
                try:
                    dst.execute(_table_ddl(table, cols, fks, keys))
                    _insert(dst, table, rows, [t for _, t, _ in cols])
                    break
                except duckdb.Error as exc:
                    dst.execute(f"DROP TABLE IF EXISTS {quote(table)}")
                    if not keys:
                        raise
                    notes.append(f"{sqlite_path.stem}.{table}: keys dropped ({str(exc).splitlines()[0][:120]})")
            created.add(table)
            if keys and any(pos > 0 for _, _, pos in cols):
                keyed.add(table)
    finally:
        src.close()
        dst.close()
    return notes


def _parents_first(src: sqlite3.Connection, tables: list[str]) -> list[str]:
    """Tables ordered so a referenced table comes before its referrers (cycles keep file order)."""
    deps = {t: {r[2] for r in src.execute(f"PRAGMA foreign_key_list({quote(t)})")} & set(tables) - {t}
            for t in tables}
    order: list[str] = []
    while len(order) < len(tables):
        ready = [t for t in tables if t not in order and deps[t] <= set(order)]
        order.extend(ready or [next(t for t in tables if t not in order)])
    return order


def _foreign_keys(src, table, available, own_cols) -> list[tuple[str, list[tuple[str, str]]]]:
    """FKs whose target exists (with its key) in DuckDB already; names matched case-insensitively."""
    groups: dict[int, tuple[str, list[tuple[str, str]]]] = {}
    for _id, _seq, ref, col, ref_col, *_ in src.execute(f"PRAGMA foreign_key_list({quote(table)})"):
        target = next((t for t in available if t.lower() == ref.lower()), None)
        if target is None or ref_col is None or col.lower() not in own_cols:
            continue
        groups.setdefault(_id, (target, []))[1].append((own_cols[col.lower()], ref_col))
    return list(groups.values())


def _insert(dst: duckdb.DuckDBPyConnection, table: str, rows: list[tuple], types: list[str]) -> None:
    # Multi-row VALUES literals: DuckDB's executemany is ~50x slower.
    for i in range(0, len(rows), 1000):
        values = ", ".join("(" + ", ".join(_literal(v, t) for v, t in zip(row, types, strict=True)) + ")"
                           for row in rows[i:i + 1000])
        dst.execute(f"INSERT INTO {quote(table)} VALUES {values}")
