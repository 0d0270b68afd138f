"""sql_env: DuckDB text-to-SQL data, a sandboxed verifier, execution match and rewards.

Public names are resolved lazily so that importing one piece (say, the match rules) does not pay
for DuckDB or sqlglot.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # data (sql_env.datasets, sql_env.prompts)
    "Example": "sql_env.types",
    "Execution": "sql_env.types",
    "load_dataset": "sql_env.datasets",
    "build_builtin": "sql_env.datasets",
    "dataset_dir": "sql_env.datasets",
    "database_path": "sql_env.datasets",
    "schema_ddl": "sql_env.datasets",
    "render_prompt": "sql_env.prompts",
    "extract_sql": "sql_env.prompts",
    # execution (sql_env.sandbox, sql_env.match, sql_env.rewards, sql_env.environment)
    "Sandbox": "sql_env.sandbox",
    "results_match": "sql_env.match",
    "RewardSpec": "sql_env.rewards",
    "SQLEnvironment": "sql_env.environment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sql_env' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
