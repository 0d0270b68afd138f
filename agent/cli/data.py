"""`openrl-agent data ...`: build, import and inspect text-to-SQL datasets."""

from __future__ import annotations

import typer

app = typer.Typer(help="Build, import and inspect text-to-SQL datasets.", no_args_is_help=True)
