"""Writing dataset folders: `manifest.json`, `<split>.jsonl`, `databases/<db_id>.duckdb`.

A folder is built in a staging sibling and renamed into place, so a reader never sees half a
dataset and two processes building the same one at once both end up with one complete copy.
Reading and resolving names is `store.py`; builders (built-in, importers) use this module only.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sql_env.types import Example

MANIFEST = "manifest.json"


class DatasetError(ValueError):
    """A dataset name, path or split that does not exist; the message says what would work."""


def cache_root() -> Path:
    return Path(os.environ.get("OPENRL_AGENT_CACHE", "~/.cache/openrl-agent")).expanduser() / "datasets"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_dir(final: Path) -> Path:
    """An empty `.NAME.tmp-PID` sibling of `final`; leftovers of dead builders are removed."""
    for old in final.parent.glob(f".{final.name}.tmp-*"):
        pid = old.name.rsplit("-", 1)[1]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    staging = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    (staging / "databases").mkdir(parents=True)
    return staging


def publish(staging: Path, final: Path, force: bool) -> Path:
    """Move a finished staging folder to `final` (replacing it only when `force`)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and force:
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(staging, final)
    except OSError:
        # Someone else published first; theirs is complete, so keep it and drop ours.
        if not (final / MANIFEST).exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return final


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_split(folder: Path, split: str, examples: Iterable[Example]) -> int:
    tmp = folder / f"{split}.jsonl.tmp"
    n = 0
    with tmp.open("w") as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_json(), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, folder / f"{split}.jsonl")
    return n
