"""Shared fixtures for sql_env tests: one real built-in benchmark per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A private OPENRL_AGENT_CACHE for the session (restored afterwards), so tests never touch
    the user's cache and `load_dataset("builtin", ...)` finds the build below."""
    path = tmp_path_factory.mktemp("openrl-cache")
    old = os.environ.get("OPENRL_AGENT_CACHE")
    os.environ["OPENRL_AGENT_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("OPENRL_AGENT_CACHE", None)
    else:
        os.environ["OPENRL_AGENT_CACHE"] = old


@pytest.fixture(scope="session")
def builtin_dir(cache_dir) -> Path:
    from sql_env.datasets import build_builtin

    return build_builtin(seed=0)
