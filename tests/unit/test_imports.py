"""Pure parts of CSV import/export: header checks, row validation, batching per
logical shard, formula neutralisation, and the streaming multipart reader."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import networks as pydantic_networks
from pydantic_core import PydanticCustomError

from deployments.integration import csvio
from gateway.errors import BadRequest
from gateway.uploads import TooLarge, save_upload

HEADER = ["name", "email", "tags", "owner_id", "external_id"]


def test_header_checks() -> None:
    assert csvio.check_header([" Name ", "EMAIL"]) == ["name", "email"]
    with pytest.raises(csvio.BadHeader, match="unknown column"):
        csvio.check_header(["name", "colour"])
    with pytest.raises(csvio.BadHeader, match="missing column"):
        csvio.check_header(["email"])
    with pytest.raises(csvio.BadHeader, match="twice"):
        csvio.check_header(["name", "name"])
    with pytest.raises(csvio.BadHeader, match="empty"):
        csvio.check_header([])


def test_a_good_row_uses_the_customer_rules() -> None:
    row = csvio.parse_row(2, HEADER, ["Acme", "a@acme.io", "vip; eu;vip", "", "X1"], 7, False)
    assert isinstance(row, csvio.ImportRow)
    assert row.values == (
        "Acme", "a@acme.io", None, None, None, ["vip", "eu"], 7, "{}", "X1", None,
    )  # fmt: skip
    assert row.key == "ext:X1" and row.line == 2


def test_a_row_without_external_id_is_known_by_its_values() -> None:
    def parse(cells: list[str]) -> csvio.ImportRow:
        row = csvio.parse_row(2, HEADER, cells, 7, False)
        assert isinstance(row, csvio.ImportRow)
        return row

    one = parse(["Acme", "a@acme.io", "vip", "", ""])
    # The same values (after validation: spaces, tag order of first appearance) match.
    assert parse([" Acme ", "a@acme.io", "vip;vip", "", ""]).key == one.key
    assert one.key.startswith("import:") and one.values[-1] == one.key
    assert parse(["Acme", "b@acme.io", "vip", "", ""]).key != one.key


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        (["", "", "", "", ""], "name"),
        (["Acme", "not-an-email", "", "", ""], "email"),
        (["Acme", "", "a,b", "", ""], "tags"),
        (["Acme", "", "", "abc", ""], "owner_id"),
        (["Acme", "", "", "99", ""], "customer:assign"),
        (["Acme", ""], "expected 5 cells"),
        (["Acme", "", "", "", "x" * 201], "external_id"),
    ],
)
def test_a_bad_row_says_which_field(cells: list[str], message: str) -> None:
    row = csvio.parse_row(9, HEADER, cells, 7, False)
    assert isinstance(row, csvio.RowError)
    assert row.line == 9 and message in row.message


_EMAILISH = st.text(
    alphabet=st.sampled_from('ab.@"<> \\(),;:[]-+_=é\u0301\u0338＠'), max_size=24
) | st.emails().map(str)


_ATOM = st.text(alphabet=st.sampled_from("aZ09_!#$%&'*+-/=?^`{|}~"), min_size=1, max_size=8)
_LABEL = st.sampled_from(
    ["example", "EXAMPLE", "a", "x-y", "-x", "x-", "123", "xn--bcher-kva", "xn--zz", "localhost",
     "test", "invalid", "local", "com", "COM", "io", "1", "a" * 63, "a" * 64, "onion", ""]
)  # fmt: skip
_PLAIN = st.builds(
    lambda local, labels: ".".join(local) + "@" + ".".join(labels),
    st.lists(
        _ATOM | st.sampled_from(["Postmaster", "abuse", "x" * 64, ""]), min_size=1, max_size=3
    ),
    st.lists(_LABEL, min_size=1, max_size=4),
)


@settings(max_examples=600, deadline=None)
@given(_PLAIN | _EMAILISH | st.text(max_size=260).map(lambda t: t + "@example.com"))
def test_the_plain_address_path_agrees_with_pydantic_and_email_validator(text: str) -> None:
    """What `plain_email` answers is what `EmailStr` stores; whatever it leaves (None)
    goes to the library's own path."""
    stored = csvio.plain_email(text)
    try:
        expected = pydantic_networks.validate_email(text)[1]
    except PydanticCustomError:
        assert stored is None
        return
    assert stored is None or stored == expected


def test_the_plain_address_path_takes_the_common_addresses() -> None:
    assert csvio.plain_email("Ann.Lee+crm@Example.COM") == "Ann.Lee+crm@example.com"
    for left in ("Postmaster@example.com", "ann@bücher.de", "Ann <ann@example.com>",
                 '"a b"@example.com', "ann@localhost", "ann@x.invalid"):  # fmt: skip
        assert csvio.plain_email(left) is None, left


def test_the_caseless_mailbox_names_are_the_librarys() -> None:
    # A test may read the library's internals: a release that changes them fails here,
    # not in an import.
    from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

    assert frozenset(CASE_INSENSITIVE_MAILBOX_NAMES) == csvio.CASELESS_MAILBOXES


def test_importing_the_csv_module_changes_no_library() -> None:
    # The module, not the package's function of the same name.
    module = sys.modules["email_validator.validate_email"]
    assert not hasattr(pydantic_networks.validate_email, "original")
    assert not hasattr(module.split_email, "original")
    assert not hasattr(module.validate_email_domain_name, "cache_info")


def test_batches_per_shard_keep_an_external_id_on_its_shard() -> None:
    rows = [
        csvio.parse_row(i + 2, HEADER, [f"C{i}", "", "", "", f"E{i % 3}" if i % 2 else ""], 1, True)
        for i in range(10)
    ]
    placed: list[str | None] = []

    def place(key: str | None) -> int:
        assert key is not None  # every row has a stable place
        placed.append(key)
        return int(key[-1]) + 1 if key.startswith("ext:") else 0

    batches = csvio.encode_by_shard([r for r in rows if isinstance(r, csvio.ImportRow)], place)
    assert sum(len(b.rows) for b in batches.values()) == 10
    for shard, batch in batches.items():
        assert batch.shard == shard
        assert len(batch.rows) == len(batch.created) == len(batch.keys)
        assert all(k.startswith("ext:") == (shard != 0) for k in batch.keys)
    assert "ext:E1" in placed and any(k and k.startswith("import:") for k in placed)


def test_encoded_rows_read_back_as_copy_reads_csv() -> None:
    """COPY's CSV: an absent value is an unquoted empty field (NULL), texts keep
    quotes, commas and line breaks, tags are an array literal with quoted elements."""
    header = ["name", "email", "phone", "tags", "owner_id", "external_id"]
    row = csvio.parse_row(2, header, ['A "q", b\nc', "", "", 'x"y;b\\s;{z}', "9", "E1"], 7, True)
    assert isinstance(row, csvio.ImportRow)
    (batch,) = csvio.encode_by_shard([row], lambda key: 3).values()
    (record,) = batch.rows
    assert "\n" in record  # the line break is inside a quoted field
    (fields,) = csv.reader(io.StringIO(record + "\n"))
    assert fields == [
        'A "q", b\nc', "", "", "", "", '{"x\\"y","b\\\\s","{z}"}', "9", "{}", "E1", "",
    ]  # fmt: skip
    assert record.startswith('"A ""q"", b\nc",,,,,')  # NULL: unquoted, never '""'
    (changes,) = csv.reader(io.StringIO(batch.created[0]))
    assert json.loads(changes[0]) == {
        "name": [None, 'A "q", b\nc'],
        "tags": [None, ['x"y', "b\\s", "{z}"]],
        "owner_id": [None, 9],
    }
    assert batch.keys == ["ext:E1"]


def test_a_nul_character_fails_its_row() -> None:
    row = csvio.parse_row(4, HEADER, ["Ac\x00me", "", "", "", ""], 7, False)
    assert isinstance(row, csvio.RowError) and row.line == 4 and "NUL" in row.message


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("=cmd()", "'=cmd()"),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_formulas_are_neutralised(cell: str, safe: str) -> None:
    assert csvio.neutralise(cell) == safe


def test_export_quotes_round_trip() -> None:
    row = {"id": 5, "name": 'Say "hi", then =go', "tags": ["a", "b"], "email": "=x@y.z"}
    text = csvio.csv_lines([csvio.EXPORT_COLUMNS, csvio.export_cells(row)])
    back = list(csv.reader(io.StringIO(text)))
    cells = dict(zip(back[0], back[1], strict=True))
    assert cells["name"] == 'Say "hi", then =go'
    assert cells["email"] == "'=x@y.z" and cells["tags"] == "a;b" and cells["id"] == "5"


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("chunk", [1, 7, 64, 100_000])
def test_multipart_file_part_is_streamed_to_disk(tmp_path: Path, chunk: int) -> None:
    content = b"name,email\r\nAcme,a@acme.io\r\n" * 50
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="c.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n" + content + b"\r\n--XyZ--\r\n"
    )
    dest = tmp_path / "up.csv"
    size = asyncio.run(
        save_upload(_chunks(body, chunk), "multipart/form-data; boundary=XyZ", dest, 10_000)
    )
    assert dest.read_bytes() == content and size == len(content)


def test_upload_cap_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TooLarge):
        asyncio.run(save_upload(_chunks(b"x" * 100, 10), "text/csv", tmp_path / "a", 50))
    body = b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--B--\r\n'
    with pytest.raises(BadRequest, match="no file"):
        asyncio.run(save_upload(_chunks(body, 5), "multipart/form-data; boundary=B",
                                tmp_path / "b", 50))  # fmt: skip


@pytest.mark.parametrize(
    ("body", "records"),
    [
        (b"name\nA\nB\n", 2),
        (b"name\r\nA\r\n\r\nB", 2),  # CRLF, a blank line, no final newline
        (b'name,email\n"Multi\nline",a@b.io\nC,\n', 2),  # a quoted newline: parsed
        (b"name\n", 0),
    ],
)
def test_records_are_counted_like_the_reader_sees_them(
    tmp_path: Path, body: bytes, records: int
) -> None:
    from deployments.integration.service import count_records

    path = tmp_path / "c.csv"
    path.write_bytes(body)
    assert count_records(path) == records


def test_custom_field_columns_are_checked_by_their_definitions() -> None:
    from tests.unit.test_custom_fields import DEFS

    with pytest.raises(csvio.BadHeader, match="cf.nope"):
        csvio.check_header(["name", "cf.nope"], DEFS)
    header = csvio.check_header(["name", "cf.tier", "cf.seats", "cf.tags", "cf.vip"], DEFS)
    good = csvio.parse_row(2, header, ["Acme", "gold", "12", "a;b", "yes"], 7, False, DEFS)
    assert isinstance(good, csvio.ImportRow)
    # The row's own values only: defaults are added where a customer is made.
    assert json.loads(good.values[7]) == {
        "seats": 12,
        "tags": ["a", "b"],
        "tier": "gold",
        "vip": True,
    }
    bad = csvio.parse_row(3, header, ["Acme", "bronze", "", "", "maybe"], 7, False, DEFS)
    assert isinstance(bad, csvio.RowError) and bad.message == "cf.vip: must be true or false"
    bad = csvio.parse_row(4, header, ["Acme", "bronze", "", "", ""], 7, False, DEFS)
    assert isinstance(bad, csvio.RowError)
    assert bad.message == "cf.tier: must be one of gold, silver; cf.seats: required"
    chunk = csvio.parse_chunk(["Acme,gold,3,,\r\n"], 2, header, 7, False, 4, DEFS)
    (batch,) = chunk.batches.values()
    assert json.loads(batch.defaults) == {"vip": False}
