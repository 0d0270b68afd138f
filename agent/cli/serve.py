"""`openrl-agent serve`: a Tinker-compatible training API over rl_core (docs/tinker.md).

The server runs as its own process (`python -m rl_core.serve`): the agent's process never loads a
model (DESIGN.md), and Ctrl-C here stops it."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import typer

from agent.cli.common import console, fail
from agent.cli.session import _examples

app = typer.Typer()


@app.command(epilog=_examples("openrl-agent serve --model builtin:tiny-gemma",
                              "openrl-agent serve --model builtin:tiny-gemma --model builtin:micro-gemma --port 8000",
                              "TINKER_BASE_URL=http://127.0.0.1:8000 TINKER_API_KEY=tml-local python examples/tinker_grpo.py"))
def serve(
    model: list[str] = typer.Option(["builtin:tiny-gemma"], "--model", help="Base model to serve (repeat for several)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
    device: str = typer.Option("auto", "--device", help="auto (the first GPU torch sees, else CPU), cpu or cuda."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="Where saved weights live (default: the cache's serve/)."),
    threads: int = typer.Option(0, "--threads", min=0, help="Torch CPU threads (0: torch's default)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="OPENRL_SERVE_API_KEY",
                                       help="Require this X-API-Key (default: accept any key)."),
) -> None:
    """Serve the Tinker API (SDK 0.38.x) on the given base models: LoRA training clients with their own
    optimizers share one loaded model; point the tinker SDK at it with TINKER_BASE_URL."""
    if importlib.util.find_spec("tinker") is None or importlib.util.find_spec("uvicorn") is None:
        fail("the server needs the tinker extra: pip install -e '.[tinker]'")
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        console.print("[yellow]warning:[/] listening beyond this machine without --api-key: anyone who can "
                      "reach the port can train and sample", highlight=False)
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            fail(f"cannot serve on {host}:{port} ({exc.strerror or exc}); pick another with --port")
    cmd = [sys.executable, "-m", "rl_core.serve", "--host", host, "--port", str(port), "--device", device, "--threads", str(threads)]
    for name in model:
        cmd += ["--model", name]
    if state_dir is not None:
        cmd += ["--state-dir", str(state_dir)]
    env_key = {"OPENRL_SERVE_API_KEY": api_key} if api_key else {}
    console.print(f"serving {', '.join(model)} at http://{host}:{port} (Ctrl-C stops it)", highlight=False)
    try:
        code = subprocess.run(cmd, env={**os.environ, **env_key}).returncode
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(code)

