"""Local HTTP servers speaking Gemini's `generateContent` REST API and OpenAI's Chat Completions API.

The real clients (google-genai through HttpOptions(base_url=...), openai through base_url=...) are
pointed at them. Replies come from a queue the test fills:
  ("json", obj)          200 with obj as the model's JSON text
  ("text", str)          200 with raw (possibly malformed) text
  ("status", code)       an API error
  ("status", 429, secs)  a rate limit with a `retry-after: secs` header
  ("sleep", s)           answer (the default) only after s seconds
  ("hang", None)         never answer (until the server shuts down)
With the queue empty they propose `k` configs (read from the prompt) with learning_rate 2e-4.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def default_reply(prompt: str, name: str) -> dict[str, Any]:
    k = int(re.search(r"Propose exactly (\d+)", prompt).group(1)) if "Propose exactly" in prompt else 1
    return {"analysis": "default", "proposals": [
        {"params": {"learning_rate": 2e-4}, "rationale": f"{name} pick {i}"} for i in range(k)]}


class ScriptedServer:
    name = "llm"

    def __init__(self) -> None:
        self.replies: list[tuple[Any, ...]] = []
        self.requests: list[dict[str, Any]] = []
        self.closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body, "headers": {k.lower(): v for k, v in self.headers.items()},
                                        "t": time.monotonic()})
                reply = server.replies.pop(0) if server.replies else ("default", None)
                kind, value = reply[0], reply[1]
                if kind == "hang":
                    server.closing.wait()
                    return
                if kind == "sleep":
                    time.sleep(value)
                    kind, value = "default", None
                if kind == "status":
                    headers = {"retry-after": str(reply[2])} if len(reply) > 2 else {}
                    self._send(value, server.error_body(value), headers)
                    return
                if kind == "default":
                    value = default_reply(server.prompt_of(body), server.name)
                text = value if kind == "text" else json.dumps(value)
                self._send(200, server.answer_body(text))

            def _send(self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, val in (headers or {}).items():
                        self.send_header(key, val)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up: what the timeout tests want

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def prompt(self, i: int = -1) -> str:
        return self.prompt_of(self.requests[i]["body"])

    # -- the protocol: overridden per API --
    def prompt_of(self, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def answer_body(self, text: str) -> dict[str, Any]:
        raise NotImplementedError

    def error_body(self, code: int) -> dict[str, Any]:
        raise NotImplementedError


class GeminiServer(ScriptedServer):
    name = "gemini"

    def prompt_of(self, body: dict[str, Any]) -> str:
        return body["contents"][0]["parts"][0]["text"]

    def answer_body(self, text: str) -> dict[str, Any]:
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2}}

    def error_body(self, code: int) -> dict[str, Any]:
        return {"error": {"code": code, "message": "scripted failure", "status": "UNAVAILABLE"}}


class OpenAIServer(ScriptedServer):
    """POST {base_url}/chat/completions, as vLLM, Ollama and llama.cpp servers answer it."""

    name = "openai"

    def prompt_of(self, body: dict[str, Any]) -> str:
        return body["messages"][-1]["content"]

    def answer_body(self, text: str) -> dict[str, Any]:
        return {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": "local-model",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    def error_body(self, code: int) -> dict[str, Any]:
        return {"error": {"message": "scripted failure", "type": "server_error", "code": code}}
