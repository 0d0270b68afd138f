"""SQLite's way with numbers stored as text, as extra DuckDB candidates for a gold query.

Spider's SQLite files declare columns loosely (`Horsepower TEXT` holding '130' and 'null'), and the
copy keeps such columns VARCHAR so text stays text. SQLite then compares and aggregates them by its
type-affinity rules (https://www.sqlite.org/datatype3.html, section 4.2): a TEXT column compared with
a number literal compares as text (`horsepower > 150` is `horsepower > '150'`), while SUM and AVG
read each text as the number it starts with (0 when none). DuckDB instead refuses to compare
VARCHAR with a number that a value does not cast to, and has no AVG of text. The rewrites here say
in DuckDB what SQLite did; like every rewrite they are kept only when SQLite's own result confirms them.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from sql_env.sandbox import Sandbox

_COMPARISONS = (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ, exp.NEQ)
_NUMERIC_AGGREGATES = (exp.Avg, exp.Sum)


@dataclass(frozen=True)
class TextNumbers:
    """The VARCHAR columns of one database, and which of them hold numbers (name -> 'table.column')."""

    text: frozenset[str]
    numeric: dict[str, str]

    @classmethod
    def of(cls, box: Sandbox) -> TextNumbers:
        listed = box.run("SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = "
                         "current_database() AND schema_name = 'main' AND data_type = 'VARCHAR'")
        text, numeric = set(), {}
        for table, column in listed.rows:
            text.add(column.lower())
            quoted = '"' + column.replace('"', '""') + '"', '"' + table.replace('"', '""') + '"'
            counts = box.run(f"SELECT count({quoted[0]}), count(TRY_CAST({quoted[0]} AS DOUBLE)) FROM {quoted[1]}")
            if counts.ok and counts.rows[0][1] > 0 and counts.rows[0][1] >= counts.rows[0][0] / 2:
                numeric[column.lower()] = f"{table}.{column}"
        return cls(frozenset(text), numeric)

    def touched(self, tree: exp.Expression) -> list[str]:
        """The number-holding text columns a query names."""
        return sorted({self.numeric[c.name.lower()] for c in tree.find_all(exp.Column) if c.name.lower() in self.numeric})


def _text_column(node: exp.Expression, text: frozenset[str]) -> bool:
    return isinstance(node, exp.Column) and node.name.lower() in text


def _sqlite_number(column: exp.Expression) -> exp.Expression:
    """SQLite's reading of a text as a number: its numeric prefix, else 0; NULL stays NULL."""
    sql = column.sql(dialect="duckdb")
    return sqlglot.parse_one(
        f"CASE WHEN {sql} IS NULL THEN NULL ELSE COALESCE(TRY_CAST(regexp_extract({sql}, "
        r"'^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?') AS DOUBLE), 0) END", read="duckdb")


def as_sqlite(tree: exp.Expression, text: frozenset[str]) -> exp.Expression:
    """TEXT-affinity comparisons with number literals compare text; SUM/AVG read numbers from text."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, _COMPARISONS):
            left, right = node.this, node.expression
            if _text_column(left, text) and isinstance(right, exp.Literal) and right.is_number:
                node.set("expression", exp.Literal.string(right.this))
            elif _text_column(right, text) and isinstance(left, exp.Literal) and left.is_number:
                node.set("this", exp.Literal.string(left.this))
        elif isinstance(node, _NUMERIC_AGGREGATES) and _text_column(node.this, text):
            node.set("this", _sqlite_number(node.this))
        return node

    return tree.copy().transform(rewrite)


def as_numbers(tree: exp.Expression, text: frozenset[str]) -> exp.Expression:
    """Text columns read as numbers wherever a query compares or aggregates them as numbers."""

    def cast(column: exp.Expression) -> exp.Expression:
        return exp.TryCast(this=column.copy(), to=exp.DataType.build("DOUBLE"))

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, _COMPARISONS):
            for side, other in (("this", node.expression), ("expression", node.this)):
                if _text_column(node.args[side], text) and isinstance(other, exp.Literal) and other.is_number:
                    node.set(side, cast(node.args[side]))
        elif isinstance(node, (*_NUMERIC_AGGREGATES, exp.Max, exp.Min)) and _text_column(node.this, text):
            node.set("this", cast(node.this))
        return node

    return tree.copy().transform(rewrite)
