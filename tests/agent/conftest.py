from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent.llm_servers import GeminiServer, OpenAIServer


@pytest.fixture
def gemini_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[GeminiServer]:
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with GeminiServer() as server:
        yield server


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    pytest.importorskip("openai", reason="the openai extra is not installed: pip install -e '.[openai]'")
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with OpenAIServer() as server:
        yield server


def gemini_config(server: GeminiServer, **extra) -> dict:
    return {"name": "gemini", "model": "gemini-2.5-flash", "base_url": server.url, "retries": 2,
            "backoff_s": 0.01, "timeout_s": 2, **extra}


def openai_config(server: OpenAIServer, **extra) -> dict:
    return {"name": "openai", "model": "local-model", "base_url": server.url + "/v1", "retries": 2,
            "backoff_s": 0.01, "timeout_s": 2, **extra}
