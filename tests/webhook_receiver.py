"""A real local webhook receiver for tests: an HTTP server in a thread that answers
each request with the next scripted status (the last one repeats), checks every
signature with the subscription's secret and de-duplicates by event id, as docs/api.md
asks receivers to."""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field
from typing import Any

from deployments.webhooks import signing


@dataclass
class Receiver:
    script: list[int]
    host: str = "127.0.0.1"
    secret: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    effective: dict[str, bytes] = field(default_factory=dict)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{self.host}:{self.server.server_address[1]}/hooks/nextflow?x=1"

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (the stdlib's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                index = min(len(receiver.requests), len(receiver.script) - 1)
                status = receiver.script[index]
                timestamp = int(self.headers[signing.TIMESTAMP_HEADER])
                valid = signing.verify(
                    receiver.secret, timestamp, body, self.headers[signing.SIGNATURE_HEADER]
                )
                event_id = self.headers[signing.EVENT_ID_HEADER]
                receiver.requests.append(
                    {"status": status, "valid": valid, "event_id": event_id, "body": body,
                     "host": self.headers["Host"], "path": self.path}
                )  # fmt: skip
                if 200 <= status < 300 and valid:
                    receiver.effective.setdefault(event_id, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
