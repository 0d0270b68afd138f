"""`openrl-agent serve` as a user runs it: a separate process, reachable with the SDK, stopped by a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

tinker = pytest.importorskip("tinker")
from rl_core.serve.local import free_port  # noqa: E402

CLI = [sys.executable, "-c", "from agent.cli import main; main()"]


def test_serve_answers_the_sdk_and_stops_on_sigint(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--model", "builtin:micro-gemma", "--port", str(port),
                             "--device", "cpu", "--state-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/api/v1/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up in 90 s"
            time.sleep(0.3)
        caps = tinker.RestClient(base_url=url, api_key="tml-x").get_server_capabilities().result()
        assert [m.model_name for m in caps.supported_models] == ["builtin:micro-gemma"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def test_an_unknown_model_is_one_readable_line(tmp_path: Path):
    res = subprocess.run([*CLI, "serve", "--model", "no-such-model", "--port", str(free_port()),
                          "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "error: model 'no-such-model' is neither a built-in" in res.stderr
    assert "Traceback" not in res.stderr
