"""The project cache: built models live under `$OPENRL_AGENT_CACHE/models/` (default ~/.cache/openrl-agent).

A cached artefact is a directory that appears in one `os.replace`, so a reader never sees half of
it, and builders of the same artefact (two trials starting at once) serialise on a lock file so
the work is done once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def cache_dir() -> Path:
    """Root of the cache; read at call time so tests and users can point it elsewhere."""
    root = os.environ.get("OPENRL_AGENT_CACHE") or "~/.cache/openrl-agent"
    return Path(root).expanduser()


def models_dir() -> Path:
    return cache_dir() / "models"


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another process builds the same thing
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, calling `build(tmp_dir)` first if it does not exist yet.

    `build` writes into a fresh temporary sibling directory, which is renamed onto `target` only
    when `build` returns; a crash leaves no partial `target` behind.
    """
    if target.is_dir():
        return target
    with _locked(target.with_name(target.name + ".lock")):
        if target.is_dir():  # another process finished it while we waited for the lock
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
