"""A real local chat-model server for tests: an HTTP server in a thread speaking the
OpenAI chat-completions protocol (`POST <url>/chat/completions`), answering as its
`behaviour` says ("ok", "error", "garbage", "empty", "slow") and keeping every
request. The session's stack is configured with one (tests/conftest.py)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any


class ChatServer:
    """POST /v1/chat/completions answers as `behaviour` says; requests are kept."""

    def __init__(self) -> None:
        self.behaviour = "ok"
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (the stdlib's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                status, payload = 200, b""
                if server.behaviour == "ok":
                    payload = json.dumps({
                        "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {
                            "role": "assistant",
                            "content": " Invoice export fails since the tax field. ",
                        }}],
                    }).encode()  # fmt: skip
                elif server.behaviour == "error":
                    status, payload = 500, b'{"error": {"message": "overloaded"}}'
                elif server.behaviour == "garbage":
                    payload = b'{"choices": []}'
                elif server.behaviour == "empty":
                    payload = b'{"choices": [{"message": {"role": "assistant", "content": ""}}]}'
                elif server.behaviour == "slow":
                    time.sleep(2)
                    payload = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
