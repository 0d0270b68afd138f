"""Users' own DuckDB files with their questions (the DuckDB-NSQL layout): `data import duckdb`.

Input: a questions file (`.jsonl` or a `.json` list; rows `{question, query, db_id}`, `SQL`/`sql`
also read) or a folder holding one (`dev`, `test`, `train`, `questions`, `eval`), and one
`<db_id>.duckdb` per database anywhere under the folder (or the questions file's folder).

Each database file is copied byte for byte and attached in the sandbox under its own name, so a
gold that names its catalog (`nyc.taxi`) runs as it did for its author. Gold queries are DuckDB
already: they are never rewritten. Each is run twice in the training sandbox and kept when it runs
and gives the same rows both times; the rest are listed with the reason: `refused` (the sandbox
runs one SELECT or WITH query, with no file or network access: DDL/DML, COPY, SET, PRAGMA,
read_csv), `nondeterministic` (USING SAMPLE, TABLESAMPLE, random()), `duckdb_error`, `timeout`,
`too_many_rows`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sql_env.datasets.folder import DatasetError
from sql_env.datasets.importers.context import read_rows
from sql_env.datasets.importers.verify import ImportReport, Problem, import_sandbox
from sql_env.sandbox import Sandbox
from sql_env.types import Example

SPLIT_STEMS = {"train": "train", "dev": "dev", "validation": "dev", "test": "test", "questions": "dev",
               "eval": "dev"}
SQL_KEYS = ("query", "SQL", "sql")
_RANDOM = re.compile(r"\b(using\s+sample|tablesample|random\s*\(|uuid\s*\(|gen_random_uuid\s*\()", re.IGNORECASE)
_DB_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def find_question_files(path: Path, split: str | None) -> dict[str, Path]:
    if path.is_file():
        return {split or SPLIT_STEMS.get(path.stem, "dev"): path}
    found: dict[str, Path] = {}
    for stem, name in SPLIT_STEMS.items():
        for suffix in (".jsonl", ".json"):
            if (path / f"{stem}{suffix}").is_file() and name not in found:
                found[name] = path / f"{stem}{suffix}"
    if not found:
        raise DatasetError(f"no questions file in {path} (looked for dev, test, train, questions or eval "
                           ".jsonl/.json with question, query and db_id per row)")
    return found


def find_databases(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.duckdb")):
        found.setdefault(path.stem, path)  # the shallowest of equal names, by sorted order
    return found


def import_duckdb(path: Path, staging: Path, report: ImportReport, split: str | None = None,
                  ) -> dict[str, list[Example]]:
    files = find_question_files(path, split)
    root = path if path.is_dir() else path.parent
    available = find_databases(root)
    raw = {name: read_rows(file) for name, file in files.items()}
    wanted = sorted({str(r.get("db_id")) for rows in raw.values() for r in rows if isinstance(r, dict)})
    boxes: dict[str, Sandbox] = {}
    try:
        for db_id in wanted:
            if db_id in available and _DB_ID.fullmatch(db_id):
                target = staging / "databases" / f"{db_id}.duckdb"
                shutil.copyfile(available[db_id], target)
                report.copied(db_id, target)
                boxes[db_id] = import_sandbox(target)
        report.databases = len(boxes)
        report.notes.append(f"databases found under {root}: {len(available)}; used: {len(boxes)}")
        return {name: _check_split(name, rows, boxes, report) for name, rows in raw.items()}
    finally:
        for box in boxes.values():
            box.close()


def _check_split(split: str, rows: list, boxes: dict[str, Sandbox], report: ImportReport) -> list[Example]:
    kept = []
    for i, row in enumerate(rows):
        ex_id = f"{split}-{i:05d}"
        report.total += 1
        row = row if isinstance(row, dict) else {}
        db_id, question = str(row.get("db_id", "")), row.get("question")
        sql = next((row[k] for k in SQL_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
        if not (isinstance(question, str) and question.strip() and sql and db_id):
            report.problems.append(Problem(ex_id, db_id, "bad_row", "needs question, query and db_id"))
            continue
        if db_id not in boxes:
            report.problems.append(Problem(ex_id, db_id, "missing_database", f"no {db_id}.duckdb under the input"))
            continue
        gold = _check(ex_id, db_id, sql.strip().rstrip(";").strip(), boxes[db_id], report)
        if gold is not None:
            kept.append(Example(id=ex_id, db_id=db_id, question=question.strip(), gold_sql=gold))
    return kept


def _check(ex_id: str, db_id: str, sql: str, box: Sandbox, report: ImportReport) -> str | None:
    first = box.run(sql)
    reason, detail = None, ""
    if first.status == "forbidden":
        reason, detail = "refused", f"the sandbox refuses it at training time: {first.error}"
    elif first.ok and (_RANDOM.search(sql) or box.run(sql).rows != first.rows):
        reason, detail = "nondeterministic", "a random sample or value: no fixed answer to match"
    elif not first.ok:
        reason = {"timeout": "timeout", "too_many_rows": "too_many_rows"}.get(first.status, "duckdb_error")
        detail = (first.error or first.status).splitlines()[0][:200]
    report.ran += first.ok
    if reason is not None:
        report.problems.append(Problem(ex_id, db_id, reason, detail))
        return None
    return sql
