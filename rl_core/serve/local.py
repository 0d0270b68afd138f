"""Load the served base models and run the server: in the foreground (`python -m rl_core.serve`,
what `openrl-agent serve` runs) or on a background thread (tests, examples, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from rl_core.serve.app import build_app
from rl_core.serve.host import BaseHost
from rl_core.serve.service import ServeSettings


def load_hosts(settings: ServeSettings) -> dict[str, BaseHost]:
    return {name: BaseHost(name, settings.device, settings.lora_alpha) for name in dict.fromkeys(settings.models)}


def _config(settings: ServeSettings, hosts: dict[str, BaseHost], host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(build_app(settings, hosts), host=host, port=port, log_level=log_level,
                          timeout_keep_alive=75, access_log=log_level == "debug")


def serve_forever(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    uvicorn.Server(_config(settings, load_hosts(settings), host, port, log_level)).run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running(settings: ServeSettings, hosts: dict[str, BaseHost] | None = None, port: int | None = None,
            log_level: str = "warning") -> Iterator[str]:
    """A server on a loopback port for the duration of the block; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(_config(settings, hosts or load_hosts(settings), "127.0.0.1", port, log_level))
    thread = threading.Thread(target=server.run, name="tinker-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
