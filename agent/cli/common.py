"""Helpers every CLI group shares: one readable error line, never a traceback for user mistakes."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """A mistake the user can fix (bad path, bad config, unknown session). Shown as one line."""


def fail(message: str, code: int = 1) -> NoReturn:
    # The message is plain text: "pip install -e '.[tracking]'" or a path with brackets must print as written.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
