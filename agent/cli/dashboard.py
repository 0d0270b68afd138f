"""`openrl-agent dashboard [SESSION]`: optuna-dashboard on a session's study (tools/dashboard.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from agent.cli.common import console, fail
from agent.cli.session import RUNS_DIR, SESSION, _as_user_error, _examples, resolve_session

app = typer.Typer()


@app.command(epilog=_examples("openrl-agent dashboard", "openrl-agent dashboard s-20261125-181500 --port 8081",
                              "openrl-agent dashboard --host 0.0.0.0 --port 8080"))
def dashboard(
    session: str | None = SESSION,
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port to serve on; 0 picks a free one."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    runs_dir: Path = RUNS_DIR,
) -> None:
    """Serve optuna-dashboard on a session's study: each trial with its rationale, status, dev and
    test figures and parent as user attributes. Ctrl-C stops it."""
    from tools.dashboard import make_server, read_confirmation

    with _as_user_error():
        session_dir = resolve_session(session, runs_dir)
    try:
        confirmed = read_confirmation(session_dir) is not None
    except ValueError as exc:
        console.print(f"[yellow]warning:[/] {exc}", highlight=False, soft_wrap=True)
        confirmed = False
    try:
        server, url = make_server(session_dir, host, port)
    except ImportError:
        fail("optuna-dashboard is not installed; pip install -e '.[dashboard]' (or pip install optuna-dashboard)")
    except OSError as exc:
        fail(f"cannot serve on {host}:{port} ({exc.strerror or exc}); pick another with --port (0: any free port)")
    test = " with its test-split confirmation" if confirmed else ""
    console.print(f"optuna-dashboard for {session_dir.name}{test}: {url}  (Ctrl-C stops)", highlight=False,
                  soft_wrap=True)
    sys.stdout.flush()  # the URL reaches a pipe (a script, a test) at once
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
