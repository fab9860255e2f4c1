"""Custom fields: an admin's own fields on customers, contacts, deals, leads, tickets
and products. Definitions live in the auth database (`/v1/auth/fields`, the auth
service); each object's service reads them through a short cache
(deployments/auth/fields.py) and, here, checks and stores the values a write brings,
hides the values of deleted definitions, and turns `cf.<key>[op]=` list filters into
SQL over the record's `custom_fields` jsonb (a GIN index answers `eq`/`in`).

Stored forms (one per type, so that filters compare like with like): text, long
text, e-mail, URL, phone and single select as a JSON string; number as a JSON number;
decimal as a canonical decimal string; date as `YYYY-MM-DD`; datetime as UTC
`YYYY-MM-DDTHH:MM:SS.ffffffZ`; boolean as a JSON boolean; multi select as an array of
option values.

    values = fields.check(definitions, body.custom_fields, creating=True)  # 422 per key
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from deployments._kit.sql import Params, on_shards
from deployments._kit.types import Id
from deployments._kit.unique_values import (
    NO_CLAIM,
    UNIQUE_TYPES,
    Claim,
    ClaimStore,
    Records,
    claim,
    token_of,
)
from deployments._kit.versioned import Merge
from gateway.errors import BadRequest, Validation
from gateway.idempotency import Once
from gateway.inputs import Input, Patch
from gateway.listing import CustomFilter, ListQuery, Order, Position
from gateway.records import Record
from shards import WriteConn
from shards.client import Database

FieldObject = Literal["customers", "contacts", "deals", "leads", "tickets", "products"]
FIELD_OBJECTS: tuple[str, ...] = ("customers", "contacts", "deals", "leads", "tickets", "products")
# Which application keeps each object's records, and in which table.
HOLDERS: dict[str, tuple[str, str]] = {
    "customers": ("customer", "customers"),
    "contacts": ("customer", "contacts"),
    "deals": ("sales", "deals"),
    "leads": ("marketing", "leads"),
    "tickets": ("support", "tickets"),
    "products": ("product", "products"),
}
FieldType = Literal[
    "text", "long_text", "number", "decimal", "date", "datetime", "boolean",
    "single_select", "multi_select", "email", "url", "phone",
]  # fmt: skip
KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
_TEXT_MAX = {"text": 255, "long_text": 20000, "email": 254, "url": 2000, "phone": 50}
_PHONE = re.compile(r"^\+?[0-9 ().\-/]{3,50}$")
_EMAIL: TypeAdapter[str] = TypeAdapter(EmailStr)
# Which filter operators each type takes (`cf.<key>[op]=`; no operator is `eq`).
_ORDERED = frozenset({"number", "decimal", "date", "datetime"})
OPERATORS = ("eq", "in", "gt", "gte", "lt", "lte")


class Option(Input):
    value: str = Field(min_length=1, max_length=100, pattern=r"^[^,\x00]+$")
    label: str = Field(min_length=1, max_length=200)


class FieldCreate(Input):
    """A custom field of an object. `key` (how values are sent, `custom_fields.<key>`,
    and filtered, `cf.<key>[eq]=`) and `type` never change; the label and the rest
    may. `options` for select types (values unique); `default` is applied to a new
    record that leaves the field out."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"type": {"enum": ["single_select", "multi_select"]}}},
                    "then": {"required": ["options"], "properties": {"options": {"minItems": 1}}},
                    "else": {"properties": {"options": {"maxItems": 0}}},
                }
            ]
        }
    )

    object: FieldObject
    key: str = Field(pattern=KEY_PATTERN, description="lower_snake_case, at most 63 characters")
    label: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    type: FieldType
    required: bool = False
    unique: bool = Field(
        default=False,
        description="One record per value across all records (text, e-mail, URL, phone,"
        " number and decimal fields; set when the field is made). A unique e-mail field"
        " keeps its values in lower case.",
    )
    default: Any = Field(default=None, description="A value of the field's type.")
    options: list[Option] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _options_fit_type(self) -> FieldCreate:
        select = self.type in ("single_select", "multi_select")
        if select and not self.options:
            raise ValueError("a select field lists its options")
        if not select and self.options:
            raise ValueError("only select fields have options")
        values = [o.value for o in self.options]
        if len(set(values)) != len(values):
            raise ValueError("option values are unique")
        if self.unique and self.type not in UNIQUE_TYPES:
            raise ValueError(f"a {self.type} field cannot be unique")
        if self.unique and self.default is not None:
            raise ValueError("a unique field has no default (every record would share it)")
        return self


class FieldUpdate(Patch, creates=FieldCreate, nullable={"description", "default"}):
    """Label, description, required, default and options (add or relabel options; a
    value in use is never taken away: options cannot be removed)."""

    label: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    required: bool | None = None
    default: Any = None
    options: list[Option] | None = Field(default=None, max_length=200)


class FieldDefinition(Record):
    id: Id
    object: FieldObject
    key: str
    label: str
    description: str | None
    type: FieldType
    required: bool
    unique: bool = Field(default=False, description="One record per value.")
    default: Any = Field(description="Stored form; null: none.")
    options: list[dict[str, str]]
    deleted: bool = Field(description="Deleted: hidden from reads and writes, values kept.")
    purged_at: datetime | None = Field(
        default=None, description="When a deleted field's values were purged from every record."
    )
    version: int
    created_at: datetime
    updated_at: datetime


class FieldPurged(Record):
    """A purge's answer: the definition (deleted, `purged_at` set) and how many records
    held a value of it."""

    field: FieldDefinition
    records: int


class FieldListQuery(ListQuery):
    object: FieldObject | None = None
    deleted: bool = Field(default=False, description="true: the deleted definitions")
    sort: str = "created_at"
    countable: ClassVar[bool] = False
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime}
    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "object": "object",
        "deleted": "deleted",
    }


# -- values ------------------------------------------------------------------------
def stored(definition: FieldDefinition, value: Any) -> Any:
    """`value` in the field's stored form; ValueError (its message for the caller)
    when it is not a value of the field's type."""
    kind = definition.type
    if kind in _TEXT_MAX:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("a text")
        text = value.strip()
        if len(text) > _TEXT_MAX[kind]:
            raise ValueError(f"at most {_TEXT_MAX[kind]} characters")
        if kind == "email":
            try:
                address = _EMAIL.validate_python(text)
            except ValidationError:
                raise ValueError("an e-mail address") from None
            return address.lower() if definition.unique else address
        if kind == "url" and not re.match(r"^https?://[^\s/$.?#][^\s]*$", text, re.I):
            raise ValueError("an http(s) URL")
        if kind == "phone" and not _PHONE.match(text):
            raise ValueError("a phone number (digits, spaces, + ( ) . - /)")
        return text
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a finite number")
        if isinstance(value, int) and abs(value) >= 2**53:
            raise ValueError("a number within ±2^53 (send larger amounts as a decimal field)")
        return value
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError('a decimal as a string, such as "1234.50"')
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError('a decimal as a string, such as "1234.50"') from None
        if not number.is_finite() or abs(number) >= Decimal(10) ** 14:
            raise ValueError("a decimal below 10^14")
        return str(number.quantize(Decimal("0.0001")).normalize())
    if kind == "date":
        try:
            return date.fromisoformat(value).isoformat() if isinstance(value, str) else _no()
        except ValueError:
            raise ValueError("a date, YYYY-MM-DD") from None
    if kind == "datetime":
        try:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else _no()
        except ValueError:
            raise ValueError("a date-time with its offset (RFC 3339)") from None
        if moment.tzinfo is None or not 1900 <= moment.year <= 2199:
            raise ValueError("a date-time with its offset (RFC 3339), years 1900 to 2199")
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError("true or false")
        return value
    choices = [o["value"] for o in definition.options]
    if kind == "single_select":
        if value not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return value
    # multi_select
    if not isinstance(value, list) or any(v not in choices for v in value):
        raise ValueError(f"a list of {', '.join(choices)}")
    return list(dict.fromkeys(value))


def _no() -> Any:
    raise ValueError


def check(
    definitions: Mapping[str, FieldDefinition],
    values: Mapping[str, Any],
    *,
    creating: bool,
    field: str = "custom_fields",
) -> dict[str, Any]:
    """The values a write brings, checked against the object's live definitions and
    in stored form: on a create with defaults added and every required field there;
    on an update a null clears a field (not a required one). A 422 names each bad
    key (`custom_fields.<key>`), all at once."""
    out: dict[str, Any] = {}
    errors = []
    for key, value in values.items():
        definition = definitions.get(key)
        where = f"{field}.{key}"
        if definition is None:
            errors.append({"field": where, "message": "no such custom field"})
        elif value is None:
            if definition.required:
                errors.append({"field": where, "message": "required"})
            elif not creating:
                out[key] = None  # cleared
        else:
            try:
                out[key] = stored(definition, value)
            except ValueError as exc:
                errors.append({"field": where, "message": f"must be {exc}"})
    if creating:
        for key, definition in definitions.items():
            if key in out or any(e["field"] == f"{field}.{key}" for e in errors):
                continue
            if definition.default is not None:
                out[key] = definition.default
            elif definition.required:
                errors.append({"field": f"{field}.{key}", "message": "required"})
    if errors:
        raise Validation("invalid custom fields", errors)
    return out


def unique_fields(definitions: Mapping[str, FieldDefinition]) -> dict[str, tuple[int, str]]:
    """The unique fields among `definitions`: key -> (field id, type), as claims want
    them (deployments/_kit/unique_values.py)."""
    return {k: (d.id, d.type) for k, d in definitions.items() if d.unique}


def visible(
    definitions: Mapping[str, FieldDefinition], values: Mapping[str, Any]
) -> dict[str, Any]:
    """A record's custom field values under live definitions only (a deleted field's
    values stay stored, unseen, until purged)."""
    return {k: v for k, v in values.items() if k in definitions}


def merge(checked: Mapping[str, Any]) -> Merge:
    """An update's checked values as a key-by-key change of the record's
    `custom_fields` (a null clears its key; keys not given stay)."""
    return Merge(
        {k: v for k, v in checked.items() if v is not None},
        tuple(k for k, v in checked.items() if v is None),
    )


# -- one object's fields, as its service uses them -----------------------------------
class Definitions(ClaimStore, Protocol):
    """Where a service reads definitions and claims unique values
    (deployments/auth/fields.py `FieldCache`)."""

    async def of(self, object_name: str) -> dict[str, FieldDefinition]: ...


R = TypeVar("R", bound=Record)
C = TypeVar("C", bound=BaseModel)
B = TypeVar("B", bound=BaseModel)


class ObjectFields:
    """The custom fields of one object (`customers`, ...) in its service: every write
    checked, every read shown under the live definitions, `cf.` filters typed, the
    values of unique fields claimed (`records`: where the object's records are, asked
    who holds a value, deployments/_kit/unique_values.py, and purged of a field's).
    Without `source` (a service built for a test) values are kept and shown as given."""

    def __init__(self, object_name: str, source: Definitions | None, records: Records) -> None:
        self.object = object_name
        self.source = source
        self.records = records

    async def definitions(self) -> dict[str, FieldDefinition] | None:
        return None if self.source is None else await self.source.of(self.object)

    async def create(self, data: C, field: str = "custom_fields") -> C:
        """A create body with its custom fields checked, defaults added (422 per key)."""
        definitions = await self.definitions()
        if definitions is None:
            return data
        values = check(definitions, getattr(data, "custom_fields"), creating=True, field=field)  # noqa: B009
        return data.model_copy(update={"custom_fields": values})

    async def changes(
        self, changes: dict[str, Any], field: str = "custom_fields"
    ) -> dict[str, Any]:
        """An update's changes with its custom fields checked, as a key-by-key merge."""
        definitions = await self.definitions()
        if definitions is None or changes.get("custom_fields") is None:
            return changes
        values = check(definitions, changes["custom_fields"], creating=False, field=field)
        return {**changes, "custom_fields": merge(values)}

    async def claim(
        self,
        values: Mapping[str, Any] | Merge | None,
        *,
        record: int | None = None,
        key: Once | str | None = None,
        field: str = "custom_fields",
    ) -> Claim:
        """Claim the unique fields' values a write stores (`values`: a create's checked
        custom fields, or an update's `Merge`) for `record` (None: a new one); `key`:
        the write's idempotency key or a stable row key (a retry owns its claim). Use
        the answer as `async with` around the write. 409 naming each taken key."""
        if isinstance(values, Merge):
            values = values.set
        if self.source is None or not values:
            return NO_CLAIM
        definitions = await self.source.of(self.object)
        unique = unique_fields(definitions)
        if not unique or not unique.keys() & values.keys():
            return NO_CLAIM
        return await claim(
            self.source, self.records, unique, values,
            record=record, token=token_of(key, self.object), field=field,
        )  # fmt: skip

    async def claim_restore(self, record_id: int) -> Claim:
        """A deleted record's unique values claimed again before it is restored (409
        when another record took one meanwhile)."""
        if self.source is None:
            return NO_CLAIM
        values = await self.records.deleted_values(record_id)
        return await self.claim(values or {}, record=record_id)

    async def purge(self, key: str) -> int:
        """Remove the deleted field `key`'s values from every record of the object, on
        every server (`purge`); how many records held one."""
        place, table = self.records.place, self.records.table
        if isinstance(place, Database):
            return await place.write(purge, None, table, key)
        return sum(await place.write_each_server(purge, table, key))

    async def shown(self, record: R) -> R:
        """The record with only the values of live fields."""
        return _shown(record, await self.definitions())

    async def shown_all(self, records: Sequence[R]) -> list[R]:
        definitions = await self.definitions()
        return [_shown(r, definitions) for r in records]

    async def shown_results(self, result: B) -> B:
        """A batch's answer with each item's record shown under the live fields."""
        definitions = await self.definitions()
        items = getattr(result, "results")  # noqa: B009
        kept = [
            r if r.data is None else r.model_copy(update={"data": _shown(r.data, definitions)})
            for r in items
        ]
        return result.model_copy(update={"results": kept})

    async def sort(self, order: Order) -> CustomSort | None:
        """The list's custom field sort (`sort=cf.<key>`), checked; None otherwise."""
        if not order.field.startswith("cf."):
            return None
        return custom_sort(await self.definitions(), order.field)

    async def filters(self, custom: Iterable[CustomFilter]) -> list[TypedFilter]:
        custom = list(custom)
        if not custom:
            return []
        return typed_filters(await self.definitions() or {}, custom)

    async def schema(self, create: type[Input]) -> ObjectSchema:
        return object_schema(self.object, create, await self.definitions() or {})


def _shown(record: R, definitions: Mapping[str, FieldDefinition] | None) -> R:
    values = getattr(record, "custom_fields", None)
    if definitions is None or not values:
        return record
    kept = visible(definitions, values)
    if len(kept) == len(values):
        return record
    out = record.model_copy(update={"custom_fields": kept})
    out._read_after = record.read_after
    return out


# -- purging a deleted field's values -------------------------------------------------
async def purge(conn: WriteConn, shards: list[int] | None, table: str, key: str) -> int:
    """Remove `key` from the custom fields of every record of `table` (of these logical
    shards; None: an unsharded table), deleted records too, in this transaction; how
    many records held it. One pass over the table: an operator's occasional cleanup."""
    params = Params()
    where = [f"custom_fields ? {params(key)}"]
    if shards is not None:
        where.append(on_shards(params, shards))
    done = await conn.fetchval(
        f"""WITH purged AS (
                UPDATE {table} SET custom_fields = custom_fields - $1
                WHERE {" AND ".join(where)} RETURNING 1)
            SELECT count(*) FROM purged""",
        *params.values,
    )
    return int(done or 0)


# -- sorting -----------------------------------------------------------------------
# A record without a value sorts as the lowest: below every number, before every text.
NO_NUMBER = Decimal("-1E+30")
_SORTABLE = frozenset({
    "text", "email", "url", "phone", "single_select", "date", "datetime", "boolean",
    "number", "decimal",
})  # fmt: skip
_NUMERIC = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


@dataclass(frozen=True)
class CustomSort:
    """A list ordered by a custom field (`sort=cf.<key>`): its SQL expression over the
    record's `custom_fields`, and the same value for merging the servers' runs."""

    key: str
    numeric: bool

    @property
    def field(self) -> str:
        return f"cf.{self.key}"

    def sql(self, column: str = "custom_fields") -> str:
        """The sort expression (the key is a checked `KEY_PATTERN`, safe inline)."""
        text = f"({column} ->> '{self.key}')"
        if self.numeric:
            return (f"coalesce(CASE WHEN {text} ~ '{_NUMERIC}' THEN {text}::numeric END, "
                    f"{NO_NUMBER})")  # fmt: skip
        return f"coalesce({text}, '') COLLATE \"C\""

    def value(self, stored: Any) -> Any:
        """What `sql` computes for a stored value (Python's string order is PostgreSQL's
        "C" order: code points)."""
        if self.numeric:
            if isinstance(stored, bool) or not isinstance(stored, int | float | str):
                return NO_NUMBER
            try:
                number = Decimal(str(stored))
            except InvalidOperation:
                return NO_NUMBER
            return number if number.is_finite() else NO_NUMBER
        if stored is None:
            return ""
        if isinstance(stored, bool):
            return "true" if stored else "false"
        return stored if isinstance(stored, str) else str(stored)

    def row_key(self, record: Any) -> tuple[Any, int]:
        """The merge key of a record (`gateway.listing.merge_pages`)."""
        return (self.value(getattr(record, "custom_fields", {}).get(self.key)), record.id)

    def position(self, position: Position | None) -> Position | None:
        """A cursor's position with its value read as this sort's (a 400 when it is
        not one: the cursor is not from this list)."""
        if position is None or not self.numeric:
            return position
        try:
            number = Decimal(position.value)
        except (InvalidOperation, TypeError):
            raise BadRequest(
                "invalid cursor", [{"field": "cursor", "message": "not a cursor from this list"}]
            ) from None
        return Position(number, position.id)


def custom_sort(definitions: Mapping[str, FieldDefinition] | None, field: str) -> CustomSort | None:
    """The custom field sort `field` (`cf.<key>`) names, checked against the live
    definitions (422 on `sort`); None for a built-in sort."""
    if not field.startswith("cf."):
        return None
    definition = (definitions or {}).get(field[3:])
    if definition is None:
        raise Validation(
            f"cannot sort by {field!r}", [{"field": "sort", "message": "no such custom field"}]
        )
    if definition.type not in _SORTABLE:
        raise Validation(
            f"cannot sort by {field!r}",
            [{"field": "sort", "message": f"a {definition.type} field is not sortable"}],
        )
    return CustomSort(definition.key, definition.type in ("number", "decimal"))


# -- schema ------------------------------------------------------------------------
class ObjectSchema(Record):
    """What a client builds a form from: the create body's JSON Schema with
    `custom_fields` spelled out field by field, and the definitions themselves."""

    object: FieldObject
    json_schema: dict[str, Any]
    custom_fields: list[FieldDefinition]


_FORMATS: dict[str, dict[str, Any]] = {
    "text": {"type": "string", "maxLength": 255},
    "long_text": {"type": "string", "maxLength": 20000},
    "email": {"type": "string", "format": "email", "maxLength": 254},
    "url": {"type": "string", "format": "uri", "maxLength": 2000},
    "phone": {"type": "string", "pattern": _PHONE.pattern},
    "number": {"type": "number"},
    "decimal": {"type": "string", "pattern": r"^-?[0-9]{1,14}(\.[0-9]{1,4})?$"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "boolean": {"type": "boolean"},
}


def field_schema(definition: FieldDefinition) -> dict[str, Any]:
    """One custom field's JSON Schema (title: its label)."""
    values = [o["value"] for o in definition.options]
    if definition.type == "single_select":
        schema: dict[str, Any] = {"type": "string", "enum": values}
    elif definition.type == "multi_select":
        schema = {"type": "array", "items": {"type": "string", "enum": values},
                  "uniqueItems": True}  # fmt: skip
    else:
        schema = dict(_FORMATS[definition.type])
    schema["title"] = definition.label
    if definition.description:
        schema["description"] = definition.description
    if definition.default is not None:
        schema["default"] = definition.default
    if definition.options:
        schema["x-option-labels"] = {o["value"]: o["label"] for o in definition.options}
    return schema


def object_schema(
    object_name: str, create: type[Input], definitions: Mapping[str, FieldDefinition]
) -> ObjectSchema:
    """The object's create body as JSON Schema, its `custom_fields` property replaced
    by the live definitions (no others allowed; the required ones required)."""
    schema = create.model_json_schema()
    required = [k for k, d in definitions.items() if d.required and d.default is None]
    schema.setdefault("properties", {})["custom_fields"] = {
        "type": "object",
        "title": "Custom fields",
        "properties": {k: field_schema(d) for k, d in definitions.items()},
        "required": required,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = sorted({*schema.get("required", []), "custom_fields"})
    return ObjectSchema.model_validate(
        {"object": object_name, "json_schema": schema, "custom_fields": list(definitions.values())}
    )


# -- filters -----------------------------------------------------------------------
@dataclass(frozen=True)
class TypedFilter:
    """A `cf.<key>[op]` filter with its values in stored form."""

    key: str
    op: str
    type: str
    values: tuple[Any, ...]


def typed_filters(
    definitions: Mapping[str, FieldDefinition], filters: Iterable[CustomFilter]
) -> list[TypedFilter]:
    """The list's `cf.` filters checked against the definitions (422 per parameter)."""
    out, errors = [], []
    for f in filters:
        definition = definitions.get(f.key)
        name = f"cf.{f.key}[{f.op}]"
        if definition is None:
            errors.append({"field": name, "message": "no such custom field"})
            continue
        if f.op not in ("eq", "in") and definition.type not in _ORDERED:
            errors.append({"field": name, "message": f"a {definition.type} field takes eq and in"})
            continue
        if definition.type in ("long_text",):
            errors.append({"field": name, "message": "long text fields are not filtered"})
            continue
        try:
            values = tuple(_filter_value(definition, v) for v in f.values)
        except ValueError as exc:
            errors.append({"field": name, "message": f"must be {exc}"})
            continue
        out.append(TypedFilter(f.key, f.op, definition.type, values))
    if errors:
        raise Validation("invalid list parameters", errors)
    return out


def _filter_value(definition: FieldDefinition, raw: str) -> Any:
    kind = definition.type
    if kind == "number":
        try:
            number = float(raw) if any(c in raw for c in ".eE") else int(raw)
        except ValueError:
            raise ValueError("a number") from None
        return stored(definition, number)
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise ValueError("true or false")
        return raw == "true"
    if kind == "multi_select":
        return stored(definition, [raw])[0]
    return stored(definition, raw)


def filter_sql(params: Params, column: str, filters: Sequence[TypedFilter]) -> list[str]:
    """SQL conditions for typed `cf.` filters on a jsonb `column`. Equality is jsonb
    containment (`column @> {"key": value}`, which the GIN index on the column
    answers); a multi select matches when it holds the value; ranges compare the
    stored forms (numbers as numeric, the rest as text in their sortable forms)."""
    out = []
    for f in filters:
        if f.op in ("eq", "in"):
            shapes = [{f.key: [v] if f.type == "multi_select" else v} for v in f.values]
            out.append("(" + " OR ".join(f"{column} @> {params(s)}::jsonb" for s in shapes) + ")")
            continue
        op = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[f.op]
        key = params(f.key)
        if f.type in ("number", "decimal"):
            # CASE: the cast only of a number's text (a value stored before the field
            # was defined may be anything; WHERE does not order its conditions).
            number = f"({column} ->> {key})"
            value = f"{params(str(f.values[0]))}::numeric"
            out.append(
                f"CASE WHEN {number} ~ '^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$'"
                f" THEN {number}::numeric {op} {value} END"
            )
        else:
            out.append(f'({column} ->> {key}) COLLATE "C" {op} {params(f.values[0])}')
    return out


__all__ = [
    "FIELD_OBJECTS",
    "OPERATORS",
    "CustomFilter",
    "CustomSort",
    "custom_sort",
    "FieldCreate",
    "FieldDefinition",
    "FieldListQuery",
    "FieldPurged",
    "FieldUpdate",
    "HOLDERS",
    "Merge",
    "purge",
    "ObjectFields",
    "ObjectSchema",
    "object_schema",
    "merge",
    "TypedFilter",
    "check",
    "filter_sql",
    "stored",
    "typed_filters",
    "visible",
]
