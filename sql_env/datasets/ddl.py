"""Compact `CREATE TABLE` text for prompts: one line per table, short types, keys kept.

The schema dominates prompt length, and prompt length is a direct cost for a small policy, so
this keeps only what helps write SQL: column names, a coarse type, primary and foreign keys.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

import duckdb

_SHORT_TYPES = {"INTEGER": "INT", "BIGINT": "INT", "SMALLINT": "INT", "TINYINT": "INT", "HUGEINT": "INT",
                "VARCHAR": "TEXT", "DOUBLE": "REAL", "FLOAT": "REAL", "BOOLEAN": "BOOL"}


def _short(dtype: str) -> str:
    if dtype.startswith("DECIMAL"):
        return "REAL"
    return _SHORT_TYPES.get(dtype, dtype)


def _ident(name: str) -> str:
    """Quote only names that need it (imported databases have spaces and odd characters)."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def _literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes):
        return "<blob>"
    return "'" + str(value).replace("'", "''")[:40] + "'"


def schema_ddl(db_path: str | os.PathLike, sample_rows: int = 0) -> str:
    """`CREATE TABLE` lines for every table in a DuckDB file (cached per file and version)."""
    path = Path(db_path).resolve()
    return _schema_ddl(str(path), path.stat().st_mtime_ns, sample_rows)


@lru_cache(maxsize=256)
def _schema_ddl(path: str, mtime_ns: int, sample_rows: int) -> str:
    # ATTACH into a private in-memory instance rather than `connect(path)`: DuckDB refuses a second
    # in-process open of one file with a different configuration (the sandbox has its own).
    con = duckdb.connect(":memory:")
    try:
        con.execute("ATTACH ? AS src (READ_ONLY)", [path])
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'src' AND schema_name = 'main' "
            "ORDER BY table_oid").fetchall()]
        lines = []
        for table in tables:
            lines.append(_table_line(con, table))
            if sample_rows > 0:
                rows = con.execute(f"SELECT * FROM src.main.{_quoted(table)} LIMIT {int(sample_rows)}").fetchall()
                if rows:
                    shown = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)
                    lines.append(f"/* rows: {shown} */")
        return "\n".join(lines)
    finally:
        con.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_line(con: duckdb.DuckDBPyConnection, table: str) -> str:
    columns = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = 'src' AND schema_name = 'main' "
        "AND table_name = ? ORDER BY column_index", [table]).fetchall()
    constraints = con.execute(
        "SELECT constraint_type, constraint_column_names, referenced_table, referenced_column_names "
        "FROM duckdb_constraints() WHERE database_name = 'src' AND schema_name = 'main' AND table_name = ? "
        "AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') ORDER BY constraint_index", [table]).fetchall()
    pk = next((cols for kind, cols, _, _ in constraints if kind == "PRIMARY KEY"), [])
    fks = {cols[0]: (ref, ref_cols[0]) for kind, cols, ref, ref_cols in constraints
           if kind == "FOREIGN KEY" and len(cols) == 1}
    parts = []
    for name, dtype in columns:
        part = f"{_ident(name)} {_short(dtype)}"
        if pk == [name]:
            part += " PRIMARY KEY"
        if name in fks:
            ref_table, ref_col = fks[name]
            # `REFERENCES t` alone means t's primary key, which is the common case and shorter.
            part += f" REFERENCES {_ident(ref_table)}" + ("" if ref_col == name else f"({_ident(ref_col)})")
        parts.append(part)
    if len(pk) > 1:
        parts.append(f"PRIMARY KEY ({', '.join(map(_ident, pk))})")
    for kind, cols, ref, ref_cols in constraints:
        if kind == "FOREIGN KEY" and len(cols) > 1:
            parts.append(f"FOREIGN KEY ({', '.join(map(_ident, cols))}) "
                         f"REFERENCES {_ident(ref)}({', '.join(map(_ident, ref_cols))})")
    return f"CREATE TABLE {_ident(table)} ({', '.join(parts)})"
