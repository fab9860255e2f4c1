"""Log lines are JSON objects that name their trace."""

from __future__ import annotations

import logging

import orjson
from opentelemetry.sdk.trace import TracerProvider

from cluster.logs import JsonFormatter


def _record(message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("nextflow.test", logging.WARNING, __file__, 1, message, (), exc_info)


def test_a_line_is_json_with_level_logger_and_message() -> None:
    line = orjson.loads(JsonFormatter().format(_record("shard %s down")))
    assert line["level"] == "WARNING" and line["logger"] == "nextflow.test"
    assert line["message"] == "shard %s down"
    assert "trace_id" not in line and "request_id" not in line  # none here


def test_a_line_inside_a_span_carries_its_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("test")  # a local provider: nothing exported
    with tracer.start_as_current_span("work") as span:
        line = orjson.loads(JsonFormatter().format(_record("inside")))
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_an_exception_is_one_field_not_extra_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        text = JsonFormatter().format(_record("failed", exc))
    assert "\n" not in text
    assert "ValueError: boom" in orjson.loads(text)["exception"]
