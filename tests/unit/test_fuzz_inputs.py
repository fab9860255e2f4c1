"""Hypothesis fuzz of the two parsers that take free-form client input: the list
filter parser (every list endpoint's query string) and the CSV importer. Whatever
comes in, the answer is a parsed value or a clear validation error, never another
exception (which the gateway would turn into a 500)."""

from __future__ import annotations

import csv
import importlib
import io
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments.integration import csvio
from deployments.integration.service import (
    ChunkReader,
    ImportFailed,
    read_header,
)
from gateway.errors import BadRequest, Validation
from gateway.listing import ListQuery, decode_cursor, parse_list_params

_SCHEMA_MODULES = (
    "deployments._kit.history",
    "deployments.auth.schemas",
    "deployments.customer.schemas",
    "deployments.file.schemas",
    "deployments.marketing.schemas",
    "deployments.notification.schemas",
    "deployments.product.schemas",
    "deployments.sales.schemas",
    "deployments.support.schemas",
    "deployments.webhooks.schemas",
)


def _list_queries() -> list[type[ListQuery]]:
    found: dict[str, type[ListQuery]] = {}
    for name in _SCHEMA_MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, ListQuery) and value is not ListQuery:
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return list(found.values())


QUERIES = _list_queries()


def test_every_list_query_caps_its_filters() -> None:
    """Filter complexity: each parameter once, each list filter at most 50 values,
    each text filter bounded, and a page at most 200 records."""
    assert len(QUERIES) >= 15
    for model in QUERIES:
        assert model.model_fields["limit"].metadata, model
        limit = next(m.le for m in model.model_fields["limit"].metadata if hasattr(m, "le"))
        assert limit <= 200, model
        for name, info in model.model_fields.items():
            annotation = str(info.annotation)
            lengths = [getattr(m, "max_length", None) for m in info.metadata]
            if "list[" in annotation:
                assert any(n is not None and n <= 50 for n in lengths), f"{model}.{name}"
            elif typing.get_args(info.annotation) and str in typing.get_args(info.annotation):
                assert any(n is not None for n in lengths), f"{model}.{name} unbounded text"


def test_too_many_values_or_a_repeat_is_refused() -> None:
    model = next(q for q in QUERIES if "tag[in]" in q.query_params)
    with pytest.raises(Validation):
        parse_list_params([("tag[in]", ",".join(f"t{i}" for i in range(500)))], model)
    with pytest.raises(Validation):
        parse_list_params([("limit", "10"), ("limit", "20")], model)
    with pytest.raises(Validation):
        parse_list_params([("limit", "201")], model)


_param = st.one_of(st.text(max_size=30), st.sampled_from(["x[gte]", "[", "]", "%00", "a[b][c]"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(QUERIES),
    st.data(),
)
def test_filter_parser_answers_a_query_or_a_validation_error(
    model: type[ListQuery], data: st.DataObject
) -> None:
    known = sorted(model.query_params)
    keys = st.one_of(st.sampled_from(known), _param)
    values = st.one_of(
        st.text(max_size=60),
        st.sampled_from(["", ",", ",,,", "-1", "0", "1e309", "NaN", "2026-13-45", "true", "\x00"]),
        st.integers().map(str),
        st.sampled_from(["created_at", "-created_at", "name", "-name", "--name", "-"]),
    )
    params = data.draw(st.lists(st.tuples(keys, values), max_size=8))
    try:
        query = parse_list_params(params, model)
    except Validation as exc:
        refused: Validation | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.errors or refused.detail
        for error in refused.errors or []:
            assert set(error) == {"field", "message"}
        return
    assert isinstance(query, model)
    assert 1 <= query.limit <= 200
    try:
        decode_cursor(query)
    except (BadRequest, Validation):  # a cursor not ours; a sort the list has not
        pass


_cell = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "=cmd()", "a;b;;c", "x@example.com", "not-an-email", "99", "-1"]),
    st.sampled_from(["9" * 30, "\ufeffname", '"quoted"', "multi\nline", "comma,inside"]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(csvio.COLUMNS), min_size=1, max_size=8, unique=True),
    st.lists(st.lists(_cell, max_size=10), max_size=5),
    st.booleans(),
)
def test_every_csv_row_parses_or_says_why(
    header: list[str], rows: list[list[str]], may_assign: bool
) -> None:
    try:
        names = csvio.check_header(header)
    except csvio.BadHeader as exc:
        names, why = [], str(exc)
    if not names:
        assert why
        return
    for number, cells in enumerate(rows, start=2):
        parsed = csvio.parse_row(number, names, cells, caller_id=7, may_assign=may_assign)
        if isinstance(parsed, csvio.RowError):
            assert parsed.message and parsed.line == number and parsed.raw == tuple(cells)
        else:
            name, owner_id = parsed.values[0], parsed.values[6]
            assert name.strip()
            assert may_assign or owner_id == 7
            assert len(parsed.values) == len(csvio.COPY_COLUMNS)
            (batch,) = csvio.encode_by_shard([parsed], lambda key: 0).values()
            # What COPY reads is built without error, one record of every column.
            (fields,) = csv.reader(io.StringIO(batch.rows[0] + "\n"))
            assert len(fields) == len(csvio.COPY_COLUMNS) and fields[0] == name


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.lists(st.lists(_cell, max_size=6), max_size=6).map(
            lambda rows: _csv(rows).encode("utf-8")
        ),
        st.tuples(st.binary(max_size=40), st.sampled_from([b"\xff\xfe", b"\xc3(", b"\x00"])).map(
            lambda parts: b"name,email\n" + parts[0] + parts[1]
        ),
    )
)
def test_any_file_gives_a_header_or_a_clear_refusal(tmp_path: Path, content: bytes) -> None:
    """What the upload step checks before it accepts a job: a header or a 422, and
    what the job's reader does with the rest: records or one clear failure."""
    path = tmp_path / "upload.csv"
    path.write_bytes(content)
    try:
        header = read_header(path)
    except Validation as exc:
        header, why = [], exc.detail
    if not header:
        assert why
        return
    assert set(header) <= set(csvio.COLUMNS) and "name" in header
    with path.open("rb") as f:
        chunks = ChunkReader(f)
        assert chunks.header() == header
        failure, read, line = "", 0, 2
        try:  # small chunks, parsed as the job parses them
            while (chunk := chunks.next_chunk(2))[2]:
                lines, first, records = chunk
                assert first == line and records <= 2
                parsed = csvio.parse_chunk(lines, first, header, 7, True, 4)
                assert parsed.read == records
                # Every record is a row of one batch or an error, at a line of the chunk.
                numbers = [n for b in parsed.batches.values() for n in b.lines]
                numbers += [e.line for e in parsed.errors]
                assert len(numbers) == len(set(numbers)) == records
                assert all(first <= n < first + len(lines) for n in numbers)
                read, line = read + records, first + len(lines)
        except ImportFailed as exc:
            failure = str(exc)
        assert failure == "" or failure.startswith("line ")


def _csv(rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["name", "email", "tags"])
    writer.writerows(rows)
    return out.getvalue()
