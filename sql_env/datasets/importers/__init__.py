"""Import text-to-SQL data users already have on disk (no network) into a dataset folder."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from sql_env.datasets.folder import DatasetError, cache_root, publish, staging_dir, write_json, write_split
from sql_env.datasets.importers.context import import_context
from sql_env.datasets.importers.duckdb_native import import_duckdb
from sql_env.datasets.importers.spider import import_spider
from sql_env.datasets.importers.verify import REPORT_FILE, ImportReport

FORMATS = ("spider", "bird", "context", "duckdb")

__all__ = ["FORMATS", "REPORT_FILE", "ImportReport", "import_dataset"]


def import_dataset(fmt: str, path: str | Path, name: str, out_dir: str | Path | None = None,
                   force: bool = False, split: str | None = None) -> ImportReport:
    """Convert `path` (format `fmt`) into a dataset folder named `name` under the cache (or
    `out_dir`); writes `import_report.json` there and returns the report."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name == "builtin":
        raise DatasetError(f"bad dataset name {name!r}: use letters, digits, '.', '_' or '-' (not 'builtin')")
    source = Path(path).expanduser()
    if not source.exists():
        raise DatasetError(f"{source} does not exist")
    final = Path(out_dir).expanduser() if out_dir else cache_root() / name
    if final.exists() and not force:
        raise DatasetError(f"dataset {name!r} already exists at {final}; pass --force to replace it")
    started = time.perf_counter()
    staging = staging_dir(final)
    report = ImportReport(name=name, format=fmt)
    try:
        if fmt == "context":
            splits = import_context(source, staging, report, split)
        elif fmt == "duckdb":
            splits = import_duckdb(source, staging, report, split)
        else:
            if not source.is_dir():
                raise DatasetError(f"{fmt} import needs a folder (question JSON files + databases), got {source}")
            splits = import_spider(source, staging, report)
        report.kept = {split: write_split(staging, split, examples) for split, examples in splits.items()}
        report.check_unchanged(staging)
        write_json(staging / "manifest.json", {
            "name": name, "source": fmt, "imported_from": str(source.resolve()), "splits": report.kept,
            "databases": report.databases, "import_seconds": round(time.perf_counter() - started, 2),
            "database_sha256": report.database_sha256,
        })
        report.folder = str(final)
        report.write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish(staging, final, force)
    return report
