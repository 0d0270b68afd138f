"""Spider- and BIRD-style folders: question JSON files, `tables.json`, one SQLite file per database.

Spider: `train_spider.json`, `dev.json`, `tables.json`, `database/<db_id>/<db_id>.sqlite`, rows
`{question, query, db_id}`. BIRD: the same shape with `SQL`, `evidence` and `difficulty`, its
databases under `dev_databases/` or `train_databases/`. Either may be given as the folder that
holds the files, or a question file may be named per split.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sql_env.datasets.folder import DatasetError
from sql_env.datasets.importers.sqlite_copy import copy_sqlite
from sql_env.datasets.importers.verify import ImportReport, Problem, import_sandbox
from sql_env.sandbox import Sandbox
from sql_env.types import Example

# Per split, alternatives in order of preference; a tuple inside means "all of these that exist"
# (Spider's train is train_spider.json plus train_others.json).
SPLIT_FILES = {
    "train": (("train_spider.json", "train_others.json"), "train.json", "train/train.json"),
    "dev": ("dev.json", "dev/dev.json", "validation.json"),
    "test": ("test.json", "test/test.json"),
}
DB_ROOTS = ("database", "databases", "dev_databases", "train_databases", "test_database",
            "dev/dev_databases", "train/train_databases")
DIFFICULTY = {"simple": "easy", "easy": "easy", "moderate": "medium", "medium": "medium",
              "challenging": "hard", "hard": "hard", "extra": "hard"}


def find_split_files(root: Path) -> dict[str, list[Path]]:
    found = {}
    for split, options in SPLIT_FILES.items():
        for option in options:
            names = option if isinstance(option, tuple) else (option,)
            paths = [root / n for n in names if (root / n).is_file()]
            if paths:
                found[split] = paths
                break
    if not found:
        raise DatasetError(f"no question files in {root} (looked for train_spider.json, train.json, dev.json, "
                           "dev/dev.json, test.json)")
    return found


def find_sqlite(root: Path, db_id: str) -> Path | None:
    for sub in DB_ROOTS:
        path = root / sub / db_id / f"{db_id}.sqlite"
        if path.is_file():
            return path
    return None


def read_rows(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path} should hold a JSON list of questions")
    return data


def import_spider(root: Path, staging: Path, report: ImportReport) -> dict[str, list[Example]]:
    """Convert every referenced database and verify every gold query; returns kept examples."""
    split_files = find_split_files(root)
    tables_json = root / "tables.json"
    if tables_json.is_file():
        known = {t["db_id"] for t in read_rows(tables_json)}
        report.notes.append(f"tables.json lists {len(known)} databases")
    raw = {split: [row for path in paths for row in read_rows(path)] for split, paths in split_files.items()}
    db_ids = sorted({str(r.get("db_id")) for rows in raw.values() for r in rows})
    cons: dict[str, tuple[Sandbox, sqlite3.Connection]] = {}
    try:
        for db_id in db_ids:
            src = find_sqlite(root, db_id)
            if src is None:
                continue
            duck_path = staging / "databases" / f"{db_id}.duckdb"
            report.notes += copy_sqlite(src, duck_path)
            report.copied(db_id, duck_path)
            cons[db_id] = (import_sandbox(duck_path), sqlite3.connect(f"file:{src}?mode=ro", uri=True))
        report.databases = len(cons)
        return {split: _verify_split(split, rows, cons, report) for split, rows in raw.items()}
    finally:
        for duck, lite in cons.values():
            duck.close()
            lite.close()


def _verify_split(split: str, rows: list[dict], cons: dict, report: ImportReport) -> list[Example]:
    kept = []
    for i, row in enumerate(rows):
        ex_id, db_id = f"{split}-{i:05d}", str(row.get("db_id"))
        question, sql = row.get("question"), row.get("SQL") or row.get("query") or row.get("sql")
        report.total += 1
        if not question or not sql:
            report.problems.append(Problem(ex_id, db_id, "bad_row", "needs question, query (or SQL) and db_id"))
            continue
        if db_id not in cons:
            report.problems.append(Problem(ex_id, db_id, "missing_database", f"no {db_id}/{db_id}.sqlite"))
            continue
        duck, lite = cons[db_id]
        gold = report.verify(ex_id, db_id, sql, duck, lite)
        if gold is None:
            continue
        kept.append(Example(id=ex_id, db_id=db_id, question=question.strip(), gold_sql=gold,
                            evidence=(row.get("evidence") or None),
                            difficulty=DIFFICULTY.get(str(row.get("difficulty", "")).lower())))
    return kept
