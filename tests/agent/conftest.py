from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent.gemini_server import GeminiServer


@pytest.fixture
def gemini_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[GeminiServer]:
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with GeminiServer() as server:
        yield server


def gemini_config(server: GeminiServer, **extra) -> dict:
    return {"name": "gemini", "model": "gemini-2.5-flash", "base_url": server.url, "retries": 2,
            "backoff_s": 0.01, "timeout_s": 2, **extra}
