"""The pure parts of CSV import and export: the header, one row's validation (the
rules of `CustomerCreate`), batching per logical shard, and spreadsheet-safe cells.
No I/O, no Ray, no database: unit-tested on their own."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import email_validator
import orjson
from pydantic import ValidationError

from cluster import heap
from deployments._kit import custom_fields
from deployments._kit.custom_fields import FieldDefinition
from deployments.customer.schemas import CustomerCreate, CustomerRead
from gateway.errors import Validation
from shards.routing import stable_hash

COLUMNS = ("name", "email", "phone", "website", "industry", "tags", "owner_id", "external_id")
REQUIRED = frozenset({"name"})
EXTERNAL_ID_MAX = 200
# A row's columns as the import COPYs them (`ShardBatch.rows`), after the id or the
# shard that the shard manager puts first (`deployments.integration.repo`).
COPY_COLUMNS = (
    "name", "email", "phone", "website", "industry", "tags", "owner_id", "custom_fields",
    "external_id", "source_key",
)  # fmt: skip
# A column `cf.<key>` holds the custom field `key` of the customers (its definition
# says how the cell is read: deployments/_kit/custom_fields.py).
CUSTOM_PREFIX = "cf."
# The fields of a customer's history (`_kit.history`): a new one's "created" entry is
# {field: [null, value]} of each of them with a value.
AUDITED = ("name", "email", "phone", "website", "industry", "tags", "owner_id")
EXPORT_COLUMNS = (
    "id", "external_id", "name", "email", "phone", "website", "industry", "tags", "owner_id",
    "created_at", "updated_at",
)  # fmt: skip
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# A plain address: an ASCII dot-atom local part (RFC 5322's `atext`), "@", a domain of
# ASCII letters, digits, dots and hyphens.
_ATEXT = r"a-zA-Z0-9!#$%&'*+\-/=?^_`{|}~"
_PLAIN_ADDRESS = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@([A-Za-z0-9.-]+)")
_LOCAL_MAX = 64  # RFC 5321's local part
# Mailbox names email-validator stores in lower case (RFC 2142's and a few more);
# tests/unit/test_imports.py holds this to the library's own list.
CASELESS_MAILBOXES = frozenset({
    "abuse", "ftp", "hostmaster", "info", "marketing", "news", "noc", "postmaster", "sales",
    "security", "support", "usenet", "uucp", "webmaster", "www",
})  # fmt: skip
# A domain's check (`_checked_domain`) by domain and the library's two switches.
_DOMAINS: dict[tuple[str, bool, bool], str | None] = {}
_DOMAINS_MAX = 65_536


def plain_email(value: str) -> str | None:
    """`value` as `EmailStr` stores it, found without the library's general path, or
    None: the caller then validates it with the model, for its result or its error.

    A plain address (`_PLAIN_ADDRESS`) of at most 200 characters, whose local part has
    at most 64 and is not a mailbox name the library lower-cases, at a domain the
    library accepts as it is (asked once per domain through its public
    `validate_email`, then remembered: a file's addresses share few domains): the
    library would find no display name, quoting, Unicode or length problem, and store
    the local part as written, "@", the checked domain. Half of a row's validation
    was the library's general path (it normalises a window around every character);
    this is public API only, so a new release of pydantic or email-validator cannot
    break it. `tests/unit/test_imports.py` checks both agree."""
    match = _PLAIN_ADDRESS.fullmatch(value) if len(value) <= 200 else None
    if match is None:
        return None
    local, domain = match.groups()
    if len(local) > _LOCAL_MAX or local.lower() in CASELESS_MAILBOXES:
        return None
    checked = _checked_domain(domain)
    return None if checked is None else f"{local}@{checked}"


def _checked_domain(domain: str) -> str | None:
    """The normalised domain when email-validator accepts `domain` without IDNA
    conversion, else None. Remembered per domain and the library's `TEST_ENVIRONMENT`
    and `GLOBALLY_DELIVERABLE` (what its check reads besides the domain)."""
    key = (domain, email_validator.TEST_ENVIRONMENT, email_validator.GLOBALLY_DELIVERABLE)
    try:
        return _DOMAINS[key]
    except KeyError:
        pass
    try:
        info = email_validator.validate_email(f"a@{domain}", check_deliverability=False)
    except email_validator.EmailNotValidError:
        checked = None
    else:
        checked = info.domain if info.domain == info.ascii_domain else None
    if len(_DOMAINS) >= _DOMAINS_MAX:
        _DOMAINS.clear()
    _DOMAINS[key] = checked
    return checked


class BadHeader(ValueError):
    """The file's first line is not a header this import understands."""


def check_header(header: Sequence[str], custom: Collection[str] = ()) -> list[str]:
    """The header's column names, cleaned; raises BadHeader with what is wrong.
    `custom`: the keys of the customers' custom fields (a column `cf.<key>` each)."""
    names = [h.strip().lower() for h in header]
    if not names or names == [""]:
        raise BadHeader("the file is empty: the first line must name the columns")
    unknown = [
        n for n in names
        if n not in COLUMNS and not (n.startswith(CUSTOM_PREFIX) and n[3:] in custom)
    ]  # fmt: skip
    if unknown:
        raise BadHeader(
            f"unknown column(s): {', '.join(unknown)}; allowed: {', '.join(COLUMNS)}, and "
            "cf.<key> for each custom field of customers (GET /v1/customers/schema)"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadHeader(f"column(s) named twice: {', '.join(duplicates)}")
    missing = sorted(REQUIRED - set(names))
    if missing:
        raise BadHeader(f"missing column(s): {', '.join(missing)}")
    return names


@dataclass(frozen=True, slots=True)
class ImportRow:
    """A valid row, as the values the import writes (COPY_COLUMNS):
    the validated model is not kept, since a chunk holds tens of thousands of rows and
    the garbage collector would walk every model's objects again and again (measured:
    half the parse time)."""

    line: int
    # name, email, phone, website, industry, tags, owner_id, custom fields (JSON text),
    # external_id, source_key
    values: tuple[Any, ...]
    # What identifies the row across imports: "ext:" + its external id, else its
    # content key (`source_key`).
    key: str
    # Its values of unique custom fields (key, stored value): claimed before it is
    # written (deployments/_kit/unique_values.py).
    unique: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class RowError:
    line: int
    message: str
    raw: tuple[str, ...]


def parse_row(
    line: int,
    header: Sequence[str],
    cells: Sequence[str],
    caller_id: int,
    may_assign: bool,
    definitions: Mapping[str, FieldDefinition] | None = None,
) -> ImportRow | RowError:
    """One CSV record (starting on file line `line`) as a validated customer, or why not.
    Empty cells are absent values; `tags` are `;`-separated; `cf.<key>` cells are
    custom fields, checked by their `definitions` as any write of a customer is
    (defaults added, required ones required; a multi select's values `;`-separated)."""
    if len(cells) != len(header):
        return RowError(line, f"expected {len(header)} cells, found {len(cells)}", tuple(cells))
    if "\x00" in "".join(cells):
        return RowError(line, "a NUL character (PostgreSQL text cannot hold one)", tuple(cells))
    body: dict[str, Any] = {}
    custom: dict[str, str] = {}
    external_id = None
    for column, cell in zip(header, cells, strict=True):
        value = cell.strip()
        if not value:
            continue
        if column.startswith(CUSTOM_PREFIX):
            custom[column[3:]] = value
        elif column == "external_id":
            external_id = value
        elif column == "tags":
            body["tags"] = [t for t in value.split(";") if t.strip()]
        else:
            body[column] = value
    if external_id is not None and len(external_id) > EXTERNAL_ID_MAX:
        message = f"external_id: at most {EXTERNAL_ID_MAX} characters"
        return RowError(line, message, tuple(cells))
    # The address apart when it is plain (`plain_email`), else with the rest.
    email = body.get("email")
    stored = plain_email(email) if email is not None else None
    if stored is not None:
        del body["email"]
    try:
        data = CustomerCreate.model_validate(body)
    except ValidationError as exc:
        return RowError(line, _message(exc), tuple(cells))
    if stored is not None:
        email = stored
    elif email is not None:
        email = data.email
    owner_id = data.owner_id if data.owner_id is not None else caller_id
    if owner_id != caller_id and not may_assign:
        message = "owner_id: assigning another owner needs customer:assign"
        return RowError(line, message, tuple(cells))
    values: dict[str, Any] = {}
    if definitions is not None:
        try:
            read = {
                k: _cell(definitions[k], v) if k in definitions else v for k, v in custom.items()
            }
            # Checked as a create (required fields there); only the row's own values
            # are kept: defaults are added where a customer is made (repo.py), never
            # over a value an existing customer has.
            full = custom_fields.check(definitions, read, creating=True, field="cf")
            values = {k: full[k] for k in read}
        except (ValueError, Validation) as exc:
            return RowError(line, _custom_message(exc), tuple(cells))
    fields = (
        data.name, email, data.phone, data.website, data.industry, data.tags, owner_id,
    )  # fmt: skip
    extra = orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode()
    # A row without an external id is known by its content: the same row imported again
    # finds the customer it made (`source_key`, unique per shard).
    source_key = None if external_id else content_key((*fields, *((extra,) if values else ())))
    key = f"ext:{external_id}" if external_id else str(source_key)
    unique = tuple((k, v) for k, v in values.items() if definitions and definitions[k].unique)
    return ImportRow(line, (*fields, extra, external_id, source_key), key, unique)


def _cell(definition: FieldDefinition, text: str) -> Any:
    """A custom field's cell as the value its type takes (ValueError naming it)."""
    kind = definition.type
    try:
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "boolean":
            return {"true": True, "yes": True, "1": True, "false": False, "no": False,
                    "0": False}[text.lower()]  # fmt: skip
    except (ValueError, KeyError):
        expected = "a number" if kind == "number" else "true or false"
        raise ValueError(f"cf.{definition.key}: must be {expected}") from None
    if kind == "multi_select":
        return [v.strip() for v in text.split(";") if v.strip()]
    return text


def _custom_message(exc: ValueError | Validation) -> str:
    if isinstance(exc, Validation):
        return "; ".join(f"{e['field']}: {e['message']}" for e in exc.errors)
    return str(exc)


def content_key(values: tuple[Any, ...]) -> str:
    """A stable key of a row's validated values (str, int, None and lists of str, whose
    `repr` is the same in every Python process)."""
    return "import:" + hashlib.blake2b(repr(values).encode(), digest_size=16).hexdigest()


def _message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "row"
        parts.append(f"{field}: {error['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class ShardBatch:
    """One logical shard's valid rows of a chunk, already as PostgreSQL's COPY (CSV
    format) reads them, so the shard manager that writes them only puts each row's id
    in front: it neither rebuilds the rows nor encodes them again (measured: that and
    sending tuples over Ray were a third of an import's CPU)."""

    shard: int
    rows: list[str]  # each row's COPY_COLUMNS as one CSV record, without its line end
    created: list[str]  # each row's "created" history changes: one CSV field of JSON
    keys: list[str]  # each row's identity across imports (`ImportRow.key`)
    lines: list[int]  # each row's line in the file
    # The custom fields' defaults (JSON), for the customers the batch makes.
    defaults: str = "{}"
    # Each row's values of unique custom fields (`ImportRow.unique`; empty: none has one).
    unique: list[tuple[tuple[str, Any], ...]] = dataclasses.field(default_factory=list)

    def without(self, drop: set[int]) -> ShardBatch:
        """The batch less the rows at indexes `drop`."""
        keep = [i for i in range(len(self.rows)) if i not in drop]
        return ShardBatch(
            self.shard, [self.rows[i] for i in keep], [self.created[i] for i in keep],
            [self.keys[i] for i in keep], [self.lines[i] for i in keep], self.defaults,
            [self.unique[i] for i in keep] if self.unique else [],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ParsedChunk:
    """A chunk of the file's records, validated and encoded (`parse_chunk`)."""

    read: int  # records
    errors: list[RowError]
    batches: dict[int, ShardBatch]


def parse_chunk(
    lines: list[str],
    first_line: int,
    header: Sequence[str],
    caller_id: int,
    may_assign: bool,
    logical_shards: int,
    definitions: Mapping[str, FieldDefinition] | None = None,
) -> ParsedChunk:
    """The records of `lines` (the file's lines from line `first_line` on, whole
    records only: the reader that cut them found them whole) validated and encoded per
    logical shard (`encode_by_shard`, placed as `Shards.place` places a key). A pure
    function of its arguments: it runs in a Ray task (deployments/integration/tasks.py)
    as well as in a thread, with the same result."""
    reader = csv.reader(lines)
    rows: list[ImportRow] = []
    errors: list[RowError] = []
    read = 0
    line = first_line
    # Tens of thousands of short-lived containers and no cycle: the collections they
    # triggered were 10-15 % of the parse (`cluster.heap.collections_paused`).
    with heap.collections_paused():
        for cells in reader:
            if cells:
                read += 1
                parsed = parse_row(line, header, cells, caller_id, may_assign, definitions)
                if isinstance(parsed, ImportRow):
                    rows.append(parsed)
                else:
                    errors.append(parsed)
            line = first_line + reader.line_num
        batches = encode_by_shard(rows, lambda key: stable_hash(key or "") % logical_shards)
    defaults = {k: d.default for k, d in (definitions or {}).items() if d.default is not None}
    if defaults:
        text = orjson.dumps(defaults).decode()
        batches = {n: dataclasses.replace(b, defaults=text) for n, b in batches.items()}
    return ParsedChunk(read, errors, batches)


def encode_by_shard(
    rows: Iterable[ImportRow], place: Callable[[str | None], int]
) -> dict[int, ShardBatch]:
    """Rows grouped by logical shard, each on the same shard on every import: a row
    with an external id on `place("ext:" + external_id)`, others on `place(content key)`.

    CSV as COPY reads it: an absent value (None) is an unquoted empty field, which
    COPY reads as NULL; a validated text is never empty (an empty cell is an absent
    value), so no text is mistaken for NULL. Tags are an array literal with every
    element quoted. A valid row has no NUL character (`parse_row`)."""
    grouped: dict[int, list[ImportRow]] = {}
    for row in rows:
        grouped.setdefault(place(row.key), []).append(row)
    return {shard: _encode(shard, group) for shard, group in grouped.items()}


def _encode(shard: int, rows: list[ImportRow]) -> ShardBatch:
    records: list[str] = []
    created: list[str] = []
    for row in rows:
        (name, email, phone, website, industry, tags, owner_id, custom, external_id,
         source_key) = row.values  # fmt: skip
        records.append(",".join((
            _text(name), _text(email), _text(phone), _text(website), _text(industry),
            _text(_array(tags)), str(owner_id), _text(custom), _text(external_id),
            _text(source_key),
        )))  # fmt: skip
        # The audited fields are the first of a row's values.
        changes = {c: [None, v] for c, v in zip(AUDITED, row.values, strict=False) if v is not None}
        created.append(_text(orjson.dumps(changes).decode()))
    unique = [r.unique for r in rows] if any(r.unique for r in rows) else []
    return ShardBatch(
        shard, records, created, [row.key for row in rows], [r.line for r in rows],
        unique=unique,
    )  # fmt: skip


def _text(value: str | None) -> str:
    """A CSV field as COPY reads it: None an unquoted empty field (NULL), a text always
    quoted (so that neither a comma, a quote nor a line break in it ends the field)."""
    return "" if value is None else '"' + value.replace('"', '""') + '"'


def _array(items: list[str]) -> str:
    """A PostgreSQL array literal of texts, every element quoted and escaped."""
    quoted = ('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)
    return "{" + ",".join(quoted) + "}"


# -- export --------------------------------------------------------------------------------


def neutralise(cell: str) -> str:
    """A cell a spreadsheet would run as a formula gets a leading `'` (OWASP CSV
    injection): text starting with `=`, `+`, `-`, `@`, a tab or a carriage return."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def export_cells(customer: CustomerRead | Mapping[str, Any]) -> list[str]:
    c = customer.model_dump() if isinstance(customer, CustomerRead) else dict(customer)
    cells = []
    for column in EXPORT_COLUMNS:
        value = c.get(column)
        if value is None:
            text = ""
        elif column == "tags":
            text = ";".join(value)
        elif hasattr(value, "isoformat"):
            text = value.isoformat()
        else:
            text = str(value)
        # Ids and timestamps are the server's own; anything else came from a user.
        cells.append(text if column in ("id", "owner_id", "created_at", "updated_at")
                     else neutralise(text))  # fmt: skip
    return cells


def csv_lines(rows: Iterable[Sequence[str]]) -> str:
    """Rows as CSV text (RFC 4180 quoting, CRLF line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(rows)
    return out.getvalue()


ERROR_COLUMNS = ("line", "error")
