"""Bases of every request body a service takes: `Input` for creates and commands,
`Patch` for partial updates, and `JsonObject` for free-form values (custom fields).

    class CustomerCreate(Input): ...
    class CustomerUpdate(Patch, creates=CustomerCreate): ...
    class TicketUpdate(Patch, creates=TicketCreate, nullable={"contact_id"}): ...

A `Patch` tells "left out" from "null": a field left out stays as it is; a field sent
as `null` is cleared, which only a field that may be empty allows. Which ones may be
is read from the create model (a field it types as optional may be empty) or listed
in `nullable`; `null` for any other is a 422 naming the field, before anything runs
(PostgreSQL would refuse it with a NOT NULL violation, later and less clearly).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    GetJsonSchemaHandler,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError


class Input(BaseModel):
    # Server-owned fields (id, version, timestamps...) are refused, not ignored; text
    # is trimmed; numbers are finite (NaN and the infinities are refused, not stored).
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


def admits_none(field: FieldInfo) -> bool:
    """The field's type includes None (`X | None`, `Optional[X]`, `None`)."""
    annotation = field.annotation
    if annotation is None or annotation is type(None):
        return True
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(annotation)


class Patch(Input):
    """A partial update (see the module). Class arguments: `creates`, the model that
    makes the record; `nullable` (when given) the fields that may be cleared, in place
    of the ones `creates` makes optional. A field `creates` does not have may not be cleared
    unless `nullable` names it."""

    creates: ClassVar[type[BaseModel] | None] = None
    nullable: ClassVar[frozenset[str] | None] = None
    # Filled for each subclass from the two above.
    never_null: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(
        cls,
        *,
        creates: type[BaseModel] | None = None,
        nullable: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.creates = creates
        cls.nullable = None if nullable is None else frozenset(nullable)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__()
        if cls.nullable is not None:
            may = cls.nullable
        elif cls.creates is not None:
            fields = cls.creates.model_fields
            may = frozenset(n for n in cls.model_fields if n in fields and admits_none(fields[n]))
        else:
            may = frozenset()
        unknown = may - set(cls.model_fields)
        if unknown:
            raise TypeError(f"{cls.__name__}.nullable names unknown fields {sorted(unknown)}")
        cls.never_null = frozenset(cls.model_fields) - may

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The schema says what `_refuse_nulls` checks: a field that may not be cleared
        does not take `null` (a client generated from it cannot send one)."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        for name in cls.never_null:
            field = schema.get("properties", {}).get(name)
            if not field or "anyOf" not in field:
                continue
            if field.get("default", ...) is None:
                del field["default"]  # left out: unchanged
            kept = [v for v in field["anyOf"] if v.get("type") != "null"]
            if len(kept) == 1:
                del field["anyOf"]
                field.update(kept[0])
            else:
                field["anyOf"] = kept
        return schema

    @model_validator(mode="before")
    @classmethod
    def _refuse_nulls(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        nulls = [name for name in cls.never_null if name in data and data[name] is None]
        if nulls:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "not_null",
                            "{field} cannot be null (leave it out to keep it)",
                            {"field": name},
                        ),
                        loc=(name,),
                        input=None,
                    )
                    for name in sorted(nulls)
                ],
            )
        return data


def when_given(
    field: str, then: dict[str, Any], otherwise: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON schema rule: when `field` is there and not null, `then` holds (else
    `otherwise`). Written as if/then in an allOf, which validators and fuzzers read
    and client generators leave alone (they make a union of an anyOf)."""
    rule: dict[str, Any] = {
        "if": {"required": [field], "properties": {field: {"not": {"type": "null"}}}},
        "then": then,
    }
    if otherwise is not None:
        rule["else"] = otherwise
    return rule


# Integers a free-form value may hold: 64-bit, as every other number the API keeps.
_INT_RANGE = (-(2**63), 2**63 - 1)


def _finite(value: Any, path: str = "") -> None:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError(f"{path or 'value'} must not contain NUL characters (\\u0000)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path or 'value'} must be a finite number (not NaN or infinite)")
    if isinstance(value, int) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        raise ValueError(f"{path or 'value'} is out of range (integers are 64-bit)")
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                raise ValueError(f"{where!r}: a key must not contain NUL characters (\\u0000)")
            _finite(item, where)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _finite(item, f"{path}[{i}]")


def _finite_object(value: dict[str, Any]) -> dict[str, Any]:
    _finite(value)
    for key, item in value.items():
        items = item if isinstance(item, list) else [item]
        if any(isinstance(i, dict | list) for i in items):
            raise ValueError(f"{key}: a value is a text, number, boolean, null or a list of those")
    return value


# Text the API keeps never holds NUL (PostgreSQL's text and jsonb cannot); the
# OpenAPI documents say so of every free-text string (`gateway/openapi.py`).
NO_NUL = "^[^\\u0000]*$"
_SCALARS: list[dict[str, Any]] = [
    {"type": "null"},
    {"type": "boolean"},
    {"type": "integer", "minimum": _INT_RANGE[0], "maximum": _INT_RANGE[1]},
    {"type": "number"},
    {"type": "string", "pattern": NO_NUL},
]

# A free-form JSON object (custom fields): each value a text, number, boolean, null or
# a list of those; numbers finite, integers 64-bit, no NUL in text or keys. Python's
# JSON parser, which FastAPI uses, reads `NaN`, `Infinity` and `1e400` (as an
# infinity); PostgreSQL's jsonb would keep them as null, and refuses NUL.
JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(_finite_object),
    WithJsonSchema({
        "type": "object",
        "maxProperties": 100,
        "propertyNames": {"pattern": NO_NUL},
        "additionalProperties": {
            "anyOf": [*_SCALARS, {"type": "array", "items": {"anyOf": _SCALARS}}]
        },
    }),
]  # fmt: skip

__all__ = ["Input", "JsonObject", "Patch", "admits_none", "when_given"]
