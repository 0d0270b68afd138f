"""Per-example-context datasets (gretel synthetic text-to-SQL, sql-create-context): every row
carries the `CREATE TABLE` + `INSERT` statements its question runs against.

Rows with the same context share one DuckDB file named by the context's hash, written once and
then only read (golds run in the training sandbox, see verify.py), so a gold that updates, deletes
or alters cannot change what a later question's gold returns. The context is also loaded into an
in-memory SQLite database, and when that works gold results are compared between the two engines
as for Spider (SQLite reads only there too).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import duckdb
import sqlglot

from sql_env.datasets.folder import DatasetError
from sql_env.datasets.importers.verify import ImportReport, Problem, import_sandbox
from sql_env.sandbox import Sandbox
from sql_env.types import Example

QUESTION_KEYS = ("sql_prompt", "question")
CONTEXT_KEYS = ("sql_context", "context")
SQL_KEYS = ("sql", "answer", "query", "SQL")
SPLIT_NAMES = ("train", "dev", "validation", "test")


def _pick(row: dict, keys: tuple[str, ...]) -> str | None:
    return next((row[k] for k in keys if isinstance(row.get(k), str) and row[k].strip()), None)


def read_rows(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not a text file (expected JSON or JSON lines of rows)") from None
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path} should hold a JSON list (or JSON lines) of rows")
    return data


def find_split_files(path: Path, split: str | None) -> dict[str, Path]:
    if path.is_file():
        name = split or (path.stem if path.stem in SPLIT_NAMES else "dev")
        return {name: path}
    found = {s: p for s in SPLIT_NAMES for p in (path / f"{s}.jsonl", path / f"{s}.json") if p.is_file()}
    if not found:
        raise DatasetError(f"no split files in {path} (looked for train/dev/test .json or .jsonl)")
    return found


def context_id(context: str) -> str:
    normalized = "\n".join(line.strip() for line in context.strip().splitlines() if line.strip())
    return "ctx_" + hashlib.sha256(normalized.encode()).hexdigest()[:12]


def _write_duckdb(path: Path, context: str) -> None:
    """The context's database file, written and closed: from here on it is only read."""
    try:
        _run_script(path, [context])
    except duckdb.Error:
        # Contexts are written in loose, mostly-SQLite SQL: retry through sqlglot from scratch.
        path.unlink(missing_ok=True)
        _run_script(path, sqlglot.transpile(context, read="sqlite", write="duckdb"))


def _run_script(path: Path, statements: list[str]) -> None:
    # A private instance with no access to other files: a context cannot ATTACH, COPY or read_csv.
    con = duckdb.connect(":memory:")
    try:
        con.execute("ATTACH ? AS ctx", [str(path)])
        con.execute("USE ctx")
        con.execute("SET enable_external_access = false")
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()


def _load_sqlite(context: str) -> sqlite3.Connection | None:
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(context)
        return con
    except sqlite3.Error:
        con.close()
        return None


def import_context(path: Path, staging: Path, report: ImportReport, split: str | None = None,
                   ) -> dict[str, list[Example]]:
    splits: dict[str, list[Example]] = {}
    cons: dict[str, tuple[Sandbox | None, sqlite3.Connection | None, str]] = {}
    try:
        for name, file in find_split_files(path, split).items():
            splits[name] = [ex for i, row in enumerate(read_rows(file))
                            if (ex := _one(f"{name}-{i:05d}", row, staging, cons, report))]
    finally:
        for duck, lite, _ in cons.values():
            if duck is not None:
                duck.close()
            if lite is not None:
                lite.close()
    report.databases = sum(duck is not None for duck, _, _ in cons.values())
    return splits


def _one(ex_id: str, row: dict, staging: Path, cons: dict, report: ImportReport) -> Example | None:
    report.total += 1
    question, context, sql = _pick(row, QUESTION_KEYS), _pick(row, CONTEXT_KEYS), _pick(row, SQL_KEYS)
    if not (question and context and sql):
        report.problems.append(Problem(ex_id, "", "bad_row", "needs sql_prompt/question, sql_context/context "
                                                             "and sql/answer"))
        return None
    db_id = context_id(context)
    if db_id not in cons:
        try:
            path = staging / "databases" / f"{db_id}.duckdb"
            _write_duckdb(path, context)
            report.copied(db_id, path)
            cons[db_id] = (import_sandbox(path), _load_sqlite(context), "")
        except (duckdb.Error, sqlglot.errors.SqlglotError) as exc:
            cons[db_id] = (None, None, str(exc).splitlines()[0][:200])
    duck, lite, error = cons[db_id]
    if duck is None:
        report.problems.append(Problem(ex_id, db_id, "context_error", error))
        return None
    gold = report.verify(ex_id, db_id, sql, duck, lite)
    if gold is None:
        return None
    family = row.get("sql_complexity") if isinstance(row.get("sql_complexity"), str) else None
    return Example(id=ex_id, db_id=db_id, question=question.strip(), gold_sql=gold, family=family)
