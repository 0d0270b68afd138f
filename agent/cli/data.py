"""`openrl-agent data ...`: build, import and inspect text-to-SQL datasets."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from agent.cli.common import console, fail

app = typer.Typer(
    help="Build, import and inspect text-to-SQL datasets.\n\n"
    "Examples:\n\n"
    "  openrl-agent data build\n\n"
    "  openrl-agent data show builtin --split dev --limit 5\n\n"
    "  openrl-agent data import spider ~/data/spider --name spider\n\n"
    "  openrl-agent data import duckdb ~/data/nsql --name nsql",
    no_args_is_help=True,
)


@app.command()
def build(
    seed: int = typer.Option(0, help="Seed for data and questions; the same seed gives the same dataset."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a cached build exists."),
    out: Path | None = typer.Option(None, help="Write here instead of the cache ($OPENRL_AGENT_CACHE/datasets)."),
) -> None:
    """Build the built-in benchmark (four domains, train/dev/test) and print a summary.

    Example: openrl-agent data build --seed 0
    """
    from sql_env.datasets import build_builtin
    from sql_env.datasets.builtin.build import builtin_dir

    target = out or builtin_dir(seed)
    cached = (target / "manifest.json").is_file() and not force
    with console.status(f"Building the built-in benchmark (seed {seed}) ..."):
        folder = build_builtin(seed=seed, out_dir=out, force=force)
    manifest = json.loads((folder / "manifest.json").read_text())
    how = "cached, use --force to rebuild" if cached else f"built in {manifest['build_seconds']:.1f} s"
    console.print(f"[bold]builtin[/] at {folder} ({how})", soft_wrap=True)  # paths stay copyable
    console.print(_database_table(manifest))
    splits = ", ".join(f"{name} {n}" for name, n in manifest["splits"].items())
    console.print(f"splits: {splits}; {len(manifest['families'])} question families; "
                  f"{len(manifest['held_out_combinations'])} schema x family combinations held out of train")


def _database_table(manifest: dict) -> Table:
    table = Table("database", "tables (rows)", "rows", title="Databases")
    for db_id, info in manifest["databases"].items():
        tables = info["tables"]
        table.add_row(db_id, ", ".join(f"{t} ({n})" for t, n in tables.items()), str(sum(tables.values())))
    return table


@app.command(name="import")
def import_(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="spider | bird | context | duckdb"),
    path: Path = typer.Argument(..., help="Spider/BIRD folder; a context-style .json/.jsonl file or folder; "
                                "or (duckdb) a questions file or a folder with one and your .duckdb files."),
    name: str = typer.Option(..., "--name", help="Dataset name to use with `data show` and trial specs."),
    force: bool = typer.Option(False, "--force", help="Replace an existing dataset with this name."),
    split: str | None = typer.Option(None, help="Split name for a single questions file (default: from its name)."),
    out: Path | None = typer.Option(None, help="Write here instead of the cache."),
) -> None:
    """Import a dataset from disk (no network), verify every gold query, and print the report.

    SQLite databases are copied into DuckDB; each gold query is transpiled, run in DuckDB and
    compared with its SQLite result. DuckDB files (format duckdb: rows of question, query, db_id,
    with <db_id>.duckdb files anywhere under the folder) are copied as they are, and their gold
    queries run unchanged. Every gold runs in the training sandbox, so nothing is changed; the
    ones that fail or that the sandbox refuses are listed and left out.

    Examples:

      openrl-agent data import spider ~/data/spider --name spider

      openrl-agent data import bird ~/data/bird/dev --name bird-dev

      openrl-agent data import context ~/data/gretel/test.jsonl --name gretel

      openrl-agent data import duckdb ~/data/nsql --name nsql
    """
    from sql_env.datasets import DatasetError
    from sql_env.datasets.importers import import_dataset

    try:
        with console.status(f"Importing {path} ({fmt}) ..."):
            report = import_dataset(fmt, path, name, out_dir=out, force=force, split=split)
    except DatasetError as exc:
        fail(str(exc))
    console.print(report.summary(), highlight=False, markup=False)
    if not sum(report.kept.values()):
        fail(f"no example survived the import; see {report.folder}/import_report.json")
    console.print(f"dataset written to {report.folder}", soft_wrap=True, highlight=False, markup=False)
    target = name if out is None else shlex.quote(str(report.folder))  # with --out, the name is not in the cache
    console.print(f"[green]ok[/] use it as: openrl-agent data show {target} --split {next(iter(report.kept))}",
                  soft_wrap=True, highlight=False)


@app.command()
def show(
    name: str = typer.Argument("builtin", help="'builtin', an imported dataset name, or a dataset folder."),
    split: str = typer.Option("dev", help="Which split to show."),
    limit: int = typer.Option(10, min=0, help="How many examples to list (0: counts only)."),
    family: str | None = typer.Option(None, help="Only examples of this family."),
) -> None:
    """Show a split: a few examples and counts per family and difficulty.

    Example: openrl-agent data show builtin --split dev --limit 5
    """
    from sql_env.datasets import DatasetError, load_dataset

    try:
        with console.status(f"Loading {name} ..."):
            examples = load_dataset(name, split)
    except DatasetError as exc:
        fail(str(exc))
    if family:
        examples = [e for e in examples if e.family == family]
    rows = Table("id", "db", "family", "question", "gold SQL", title=f"{name} / {split}", show_lines=True)
    for ex in examples[:limit]:
        # Text cells: questions and SQL may hold [brackets] that Rich would read as markup.
        question = Text(ex.question)
        if ex.evidence:
            question.append("\n" + ex.evidence, style="dim")
        rows.add_row(ex.id, ex.db_id, ex.family or "-", question, Text(ex.gold_sql))
    if limit:
        console.print(rows)
    console.print(_counts_table(examples))
    console.print(f"{len(examples)} examples in {len({e.db_id for e in examples})} databases")
    held = Counter(e.holdout or "in-distribution" for e in examples if e.holdout or split != "train")
    if any(e.holdout for e in examples):
        console.print("what train lacks: " + ", ".join(f"{k} {n}" for k, n in sorted(held.items())))


def _counts_table(examples: list) -> Table:
    by_family = Counter((e.family or "-", e.difficulty or "-") for e in examples)
    present = {d for _, d in by_family}
    levels = [d for d in ("easy", "medium", "hard") if d in present] + sorted(present - {"easy", "medium", "hard"})
    table = Table("family", *levels, "total", title="Counts")
    for fam in sorted({f for f, _ in by_family}):
        counts = [by_family[(fam, d)] for d in levels]
        table.add_row(fam, *(str(c) if c else "" for c in counts), str(sum(counts)))
    return table
