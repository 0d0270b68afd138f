"""Text-to-SQL datasets: the built-in benchmark, importers, and the on-disk store."""

from sql_env.datasets.builtin.build import build_builtin
from sql_env.datasets.ddl import schema_ddl
from sql_env.datasets.store import DatasetError, database_path, dataset_dir, load_dataset

__all__ = ["DatasetError", "build_builtin", "database_path", "dataset_dir", "load_dataset", "schema_ddl"]
