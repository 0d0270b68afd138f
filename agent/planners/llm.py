"""One structured-JSON call to an LLM, shared by the LLM planners and by goal parsing.

Two providers speak the same way here: Gemini (google-genai, `response_json_schema`) and any
OpenAI-compatible server (the official `openai` client, Chat Completions with `response_format`
json_schema: OpenAI, vLLM, Ollama, llama.cpp, LiteLLM...). `call_json` asks, parses the reply as
JSON and retries API errors, timeouts and unparseable replies, all within ONE bounded wait:
`wait_s` seconds in total across every attempt and backoff (default 60), after which it raises
LLMError and the caller falls back (the offline planner, or the regex goal rules). A 429's
`retry-after` is honoured when it fits in the time left. Each attempt reports one progress line
through the caller's `progress` callback, so a user sees what the agent is waiting for.

Settings (a planner config dict): `name` ("gemini" | "openai"), `model`, `base_url`, `wait_s`,
`retries` (default 3), `backoff_s` (default 1, doubling), `timeout_s` (one attempt, default 30).
Keys are read from the environment at call time, never stored: GEMINI_API_KEY / GOOGLE_API_KEY;
OPENAI_API_KEY (a local server without auth needs none). The SDKs are optional extras, imported
when a call is made.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

Progress = Callable[[str], None]
DEFAULT_WAIT_S = 60.0
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
NO_KEY = "not-needed"  # local OpenAI-compatible servers ignore the key; the client insists on one


class LLMError(RuntimeError):
    """No usable answer within the wait; the message says what went wrong last."""


def gemini_api_key() -> str | None:
    return os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY")


def openai_api_key() -> str | None:
    return os.environ.get("OPENAI_API_KEY")


def openai_base_url(config: dict[str, Any]) -> str | None:
    return config.get("base_url") or os.environ.get("OPENAI_BASE_URL")


DEFAULT_ENDPOINTS = {"gemini": "https://generativelanguage.googleapis.com/", "openai": "https://api.openai.com/v1"}
PROBE_S = 5.0  # a server that has not sent a byte by then is not going to answer a planning call soon


def silent_endpoint(config: dict[str, Any], timeout_s: float = PROBE_S) -> str | None:
    """Whether the planner's endpoint takes the connection and then says nothing: one plain request,
    any HTTP answer (404 included) passes. Asked before planning, so that such a server costs
    seconds, not the whole LLM wait. A refused connection or an unknown host is not reported here:
    the call fails fast on its own and the planner falls back as usual."""
    url = urlsplit((openai_base_url(config) if config.get("name") == "openai" else config.get("base_url"))
                   or DEFAULT_ENDPOINTS.get(str(config.get("name")), ""))
    if not url.hostname:
        return None
    kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = kind(url.hostname, url.port, timeout=timeout_s)
    where = f"the {config.get('name')} endpoint {url.scheme}://{url.netloc}"
    try:
        conn.connect()
    except TimeoutError:
        conn.close()
        return f"{where} did not take a connection in {timeout_s:g}s"
    except OSError:
        conn.close()
        return None
    try:
        conn.request("GET", url.path or "/")
        conn.getresponse()
    except TimeoutError:
        return f"{where} took the connection but sent nothing in {timeout_s:g}s"
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return None


def wait_s(config: dict[str, Any]) -> float:
    return float(config.get("wait_s") or DEFAULT_WAIT_S)


def _retry_after(exc: BaseException) -> float | None:
    """The `retry-after` seconds of a 429 or 503, from the HTTP response both SDKs' errors carry."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _ask_gemini(config: dict[str, Any], prompt: str, schema: dict[str, Any], timeout_s: float) -> str:
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=config.get("base_url") or None, timeout=max(1, int(timeout_s * 1000)))
    client = genai.Client(api_key=gemini_api_key() or "missing-key", http_options=options)
    response = client.models.generate_content(
        model=config.get("model") or DEFAULT_GEMINI_MODEL, contents=prompt,
        config=types.GenerateContentConfig(response_mime_type="application/json",
                                           response_json_schema=schema, temperature=0.4))
    return response.text or ""


def _ask_openai(config: dict[str, Any], prompt: str, schema: dict[str, Any], timeout_s: float) -> str:
    import openai

    client = openai.OpenAI(base_url=openai_base_url(config), api_key=openai_api_key() or NO_KEY,
                           timeout=timeout_s, max_retries=0)  # retries are ours: one bounded wait
    try:
        response = client.chat.completions.create(
            model=config.get("model") or DEFAULT_OPENAI_MODEL, temperature=0.4,
            messages=[{"role": "user", "content": prompt}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": "reply", "schema": schema, "strict": False}})
    finally:
        client.close()
    choices = response.choices or []
    return (choices[0].message.content or "") if choices else ""


PROVIDERS: dict[str, Callable[[dict[str, Any], str, dict[str, Any], float], str]] = {
    "gemini": _ask_gemini, "openai": _ask_openai}


def call_json(config: dict[str, Any], prompt: str, schema: dict[str, Any], *,
              progress: Progress | None = None, what: str = "an answer") -> Any:
    """One structured-output request, retried within `wait_s` seconds in all; LLMError at the end."""
    name = config.get("name", "gemini")
    ask = PROVIDERS[name]
    total = wait_s(config)
    retries = int(config.get("retries", 3))
    delay = float(config.get("backoff_s", 1.0))
    per_call = float(config.get("timeout_s", 30.0))
    start = time.monotonic()
    errors: list[str] = []
    for attempt in range(retries + 1):
        left = total - (time.monotonic() - start)
        if left <= 0.05:
            break
        if progress is not None:
            progress(f"asking {name} for {what} (attempt {attempt + 1} of {retries + 1}, "
                     f"{time.monotonic() - start:.0f}s of at most {total:g}s)")
        pause = delay * 2**attempt
        try:
            return json.loads(ask(config, prompt, schema, min(per_call, left)))
        except Exception as exc:  # noqa: BLE001 - API, network, timeout and parse errors all mean "try again"
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            told = _retry_after(exc)
            if told is not None:
                errors[-1] += f" (retry after {told:g}s)"
                pause = told
        if attempt == retries:
            break
        if pause >= total - (time.monotonic() - start):
            errors[-1] += f" (waiting {pause:g}s more would pass the {total:g}s limit)"
            break
        time.sleep(pause)
    attempts = len(errors)
    raise LLMError(f"{attempts} attempt{'s' if attempts != 1 else ''} failed in {time.monotonic() - start:.1f}s "
                   f"(wait limit {total:g}s); last: {errors[-1] if errors else 'no time left'}")
