"""The `openrl-agent` command line: a few lines per command over library code."""

from __future__ import annotations

import typer

from agent.cli import cluster, dashboard, data, model, serve, trial
from agent.cli import session as session_commands
from agent.cli.common import UserError, fail

app = typer.Typer(
    name="openrl-agent",
    help="An autoresearch agent that designs and runs GRPO experiments for text-to-SQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data")
app.add_typer(trial.app, name="trial")
app.add_typer(model.app, name="model")
app.add_typer(cluster.app, name="cluster")
app.add_typer(session_commands.app)  # start, status, report, pause, resume, list
app.add_typer(dashboard.app)  # dashboard
app.add_typer(serve.app)  # serve: the Tinker-compatible API


def main() -> None:
    try:
        app()
    except UserError as exc:
        fail(str(exc))
