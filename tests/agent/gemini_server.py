"""A local HTTP server speaking Gemini's `generateContent` REST API, for tests.

google-genai's real client is pointed at it through HttpOptions(base_url=...). Replies come from a
queue the test fills: ("json", obj) -> 200 with obj as the model's JSON text; ("status", code) ->
an API error; ("text", str) -> 200 with raw (possibly malformed) text; ("sleep", s) -> answer late.
With the queue empty it proposes `k` configs (read from the prompt) with learning_rate 2e-4.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class GeminiServer:
    def __init__(self) -> None:
        self.replies: list[tuple[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body,
                                        "api_key": self.headers.get("x-goog-api-key")})
                kind, value = server.replies.pop(0) if server.replies else ("default", None)
                if kind == "sleep":
                    time.sleep(value)
                    kind, value = "default", None
                if kind == "status":
                    self._send(value, {"error": {"code": value, "message": "scripted failure",
                                                 "status": "UNAVAILABLE"}})
                    return
                if kind == "default":
                    prompt = body["contents"][0]["parts"][0]["text"]
                    k = int(re.search(r"Propose exactly (\d+)", prompt).group(1)) if "Propose exactly" in prompt else 1
                    value = {"analysis": "default", "proposals": [
                        {"params": {"learning_rate": 2e-4}, "rationale": f"gemini pick {i}"} for i in range(k)]}
                text = value if kind == "text" else json.dumps(value)
                self._send(200, {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                                 "finishReason": "STOP"}],
                                 "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1,
                                                   "totalTokenCount": 2}})

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up: what the timeout test wants

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> GeminiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def prompt(self, i: int = -1) -> str:
        return self.requests[i]["body"]["contents"][0]["parts"][0]["text"]
