"""Finding and reading dataset folders: 'builtin' (built on first use), a folder, or a cached name.

The folder layout and how folders are written live in `folder.py`.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from sql_env.datasets.builtin.build import build_builtin
from sql_env.datasets.folder import MANIFEST, DatasetError, cache_root
from sql_env.types import Example

__all__ = ["DatasetError", "database_path", "dataset_dir", "load_dataset", "read_manifest", "splits_of"]

def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def dataset_dir(name_or_path: str | os.PathLike) -> Path:
    """Resolve 'builtin' (built on first use), a dataset folder, or a name under the cache."""
    text = str(name_or_path)
    if text == "builtin":
        return build_builtin()
    path = Path(text).expanduser()
    if (path / MANIFEST).is_file():
        return path
    named = cache_root() / text
    if "/" not in text and (named / MANIFEST).is_file():
        return named
    if path.exists():
        raise DatasetError(f"{path} is not a dataset folder (no {MANIFEST}); "
                           "build one with `openrl-agent data import`")
    raise DatasetError(f"unknown dataset {text!r}: use 'builtin', a dataset folder with {MANIFEST}, "
                       "or a name created by `openrl-agent data import`")


def database_path(name_or_path: str | os.PathLike, db_id: str) -> Path:
    folder = dataset_dir(name_or_path)
    path = folder / "databases" / f"{db_id}.duckdb"
    if not path.is_file():
        known = sorted(p.stem for p in (folder / "databases").glob("*.duckdb"))
        shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
        raise DatasetError(f"dataset {folder.name} has no database {db_id!r} (it has: {shown})")
    return path


def splits_of(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.jsonl"))


@lru_cache(maxsize=32)
def _read_split(path: str, mtime_ns: int) -> tuple[Example, ...]:
    with open(path) as fh:
        return tuple(Example.from_json(json.loads(line)) for line in fh if line.strip())


def load_dataset(name_or_path: str | os.PathLike, split: str) -> list[Example]:
    """Examples of one split: `load_dataset("builtin", "dev")` or `load_dataset("/data/spider", "dev")`."""
    folder = dataset_dir(name_or_path)
    path = folder / f"{split}.jsonl"
    if not path.is_file():
        raise DatasetError(f"dataset {folder.name} has no split {split!r} "
                           f"(it has: {', '.join(splits_of(folder)) or 'none'})")
    return list(_read_split(str(path), path.stat().st_mtime_ns))
