"""The built-in text-to-SQL benchmark (four domains, generated from a seed)."""

from sql_env.datasets.builtin.build import build_builtin, builtin_dir

__all__ = ["build_builtin", "builtin_dir"]
