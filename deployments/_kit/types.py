"""Field types shared by every schema."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema

from shards.ids import MAX_ID


def _parse_id(value: object) -> object:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


# 64-bit ids: accepted as a JSON number or string, always written as a string
# (JavaScript loses precision above 2**53).
Id = Annotated[
    int,
    BeforeValidator(_parse_id),
    Field(ge=1, le=MAX_ID, strict=False),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": "^[0-9]+$", "examples": ["1234567890123"]}),
]
