"""JSON log lines for the project's own loggers (`nextflow.*`) in Serve replicas and
ShardManager actors: one object per line with the level, the logger, the message,
the Serve request id and the current trace and span ids, so a log line leads to its
request (Serve's access log has the same request id) and to its trace.

Serve's own logs are JSON already (`logging_config.encoding: JSON` in
serve_config.yaml); Ray files both in the worker's log files and the dashboard.
"""

from __future__ import annotations

import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import orjson

from cluster import tracing

_lock = threading.Lock()
_configured = False


def request_id() -> str | None:
    """The Serve request id of the running request (None outside one)."""
    try:  # Serve's request context has no public accessor in Ray 2.60
        from ray.serve import context

        return context._get_serve_request_context().request_id or None
    except Exception:  # outside a Serve replica, or the private API moved
        return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id()
        if current:
            line["request_id"] = current
        line.update(tracing.current_ids())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: int = logging.INFO) -> None:
    """Send `nextflow.*` records to stderr as JSON lines (once per process)."""
    global _configured
    if _configured:
        return
    with _lock:
        if _configured:
            return
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger = logging.getLogger("nextflow")
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False  # not twice, in plain text, through the root logger
        _configured = True
