"""Pure parts of the File service: byte ranges, filenames, content types, the
streaming multipart reader and the local blob store's all-or-nothing writes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deployments.file.blobs import (
    LocalBlobStore,
    Stored,
    TooLarge,
    measured,
    new_key,
    shard_of_key,
)
from deployments.file.content import (
    ByteRange,
    RangeNotSatisfiable,
    content_disposition,
    content_type_for,
    parse_range,
    sanitise_filename,
)
from gateway.errors import BadRequest
from gateway.uploads import FilePart, FormField, MultipartStream


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, ByteRange(0, 9)),
        ("bytes=90-", 100, ByteRange(90, 99)),
        ("bytes=-5", 100, ByteRange(95, 99)),
        ("bytes=-500", 100, ByteRange(0, 99)),
        ("bytes=10-1000", 100, ByteRange(10, 99)),
        ("BYTES = 3 - 4", 100, ByteRange(3, 4)),
        ("bytes=5-2", 100, None),  # invalid spec: ignored, full content
        ("bytes=0-1,5-6", 100, None),  # several ranges: we send it all
        ("items=0-1", 100, None),
        ("bytes=-", 100, None),
        ("garbage", 100, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=-3", 0)]
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_byte_range_headers() -> None:
    r = ByteRange(95, 99)
    assert r.length == 5
    assert r.content_range(100) == "bytes 95-99/100"


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\evil.exe", "evil.exe"),
        ("..hidden", "hidden"),
        ('a"b<c>|d?.txt', "a_b_c_d_.txt"),
        ("line\nbreak\r.txt", "line_break_.txt"),
        ("", "file"),
        (None, "file"),
        ("...", "file"),
        ("  spaced   out  .txt", "spaced out .txt"),
        ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),  # NFC
    ],
)
def test_sanitise_filename(raw: str | None, safe: str) -> None:
    assert sanitise_filename(raw) == safe


def test_long_filename_keeps_extension_and_utf8() -> None:
    name = sanitise_filename("\u00e9" * 300 + ".pdf")
    assert name.endswith(".pdf")
    assert len(name.encode()) <= 255
    name.encode().decode("utf-8")  # not cut inside a character


def test_content_type() -> None:
    assert content_type_for("text/plain", b"%PDF-1.7 ...") == "application/pdf"
    assert content_type_for("image/png", b"\x89PNG\r\n\x1a\nxxxx") == "image/png"
    assert content_type_for("text/html", b"<script>") == "application/octet-stream"
    assert content_type_for("image/svg+xml", b"<svg/>") == "application/octet-stream"
    assert content_type_for("text/plain", b"hello") == "text/plain; charset=utf-8"
    assert content_type_for("text/plain", b"\xff\xfe\x00bin") == "application/octet-stream"
    assert content_type_for("application/vnd.ms-excel", b"x") == "application/vnd.ms-excel"
    assert content_type_for("not a type", b"x") == "application/octet-stream"
    assert content_type_for(None, b"x") == "application/octet-stream"


def test_content_disposition_is_safe() -> None:
    header = content_disposition('na"me \u00e9.txt')
    assert header.startswith('attachment; filename="na_me _.txt"')
    assert "filename*=UTF-8''na%22me%20%C3%A9.txt" in header


async def _chunks(*parts: bytes, pause: float = 0) -> AsyncIterator[bytes]:
    for part in parts:
        if pause:
            await asyncio.sleep(pause)
        yield part


def _form(boundary: str, file_bytes: bytes) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="owner_type"\r\n\r\ndeal\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="owner_id"\r\n\r\n42\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
            f"Content-Type: application/x-thing\r\n\r\n"
        ).encode()
        + file_bytes
        + f"\r\n--{boundary}--\r\n".encode()
    )


@pytest.mark.asyncio
async def test_multipart_stream_in_small_pieces() -> None:
    payload = bytes(range(256)) * 40
    body = _form("XyZ", payload)
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]  # boundaries cut anywhere
    form = MultipartStream("multipart/form-data; boundary=XyZ", _chunks(*pieces))
    assert await form.next_part() == FormField("owner_type", "deal")
    assert await form.next_part() == FormField("owner_id", "42")
    part = await form.next_part()
    assert part == FilePart("file", "a.bin", "application/x-thing")
    got = b"".join([c async for c in form.file_data()])
    assert got == payload
    assert await form.next_part() is None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        ('form-data; name="file"; filename="😀 résumé.txt"'.encode(), "😀 résumé.txt"),
        (b"form-data; name=\"file\"; filename*=UTF-8''%F0%9F%98%80%20x.txt", "😀 x.txt"),
        (b"form-data; name=\"file\"; filename=\"a.txt\"; filename*=utf-8''%E2%82%AC.txt", "€.txt"),
        (b"form-data; name=\"file\"; filename*=iso-8859-1'de'%E4.txt", "ä.txt"),
        (b'form-data; name="file"; filename="\xff.txt"', "\ufffd.txt"),
    ],
)
async def test_file_names_in_any_script(disposition: bytes, name: str) -> None:
    """A UTF-8 `filename` (RFC 7578) or an RFC 5987 `filename*`, which wins."""
    body = b"--B\r\nContent-Disposition: " + disposition + b"\r\n\r\nhi\r\n--B--\r\n"
    form = MultipartStream("multipart/form-data; boundary=B", _chunks(body))
    assert await form.next_part() == FilePart("file", name, None)
    assert b"".join([c async for c in form.file_data()]) == b"hi"


@pytest.mark.asyncio
async def test_multipart_truncated_and_wrong_type() -> None:
    body = _form("B", b"abc" * 10)[:-15]  # cut inside the file's content
    form = MultipartStream("multipart/form-data; boundary=B", _chunks(body))
    await form.next_part()
    await form.next_part()
    assert isinstance(await form.next_part(), FilePart)
    with pytest.raises(BadRequest):
        async for _ in form.file_data():
            pass
    with pytest.raises(Exception, match="multipart"):
        MultipartStream("application/json", _chunks(b"{}"))


@pytest.mark.asyncio
async def test_local_store_all_or_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key, seen = new_key(3), list[Stored]()
    size = await store.put_stream(key, measured(_chunks(b"abc", b"def"), 10, seen, key))
    assert size == 6 and seen[0].sha256 == hashlib.sha256(b"abcdef").hexdigest()
    assert await store.exists(key) and await store.size(key) == 6
    assert b"".join([c async for c in store.open_range(key, 2, 4)]) == b"cde"

    big = new_key(3)
    with pytest.raises(TooLarge):
        await store.put_stream(big, measured(_chunks(b"x" * 8, b"y" * 8), 10, [], big))
    assert not await store.exists(big)
    assert list((tmp_path / ".partial").iterdir()) == []  # nothing half-written is left

    await store.delete(key)
    assert not await store.exists(key) and await store.size(key) is None
    await store.delete(key)  # idempotent
    with pytest.raises(ValueError, match="bad blob key"):
        await store.exists("../outside")


@pytest.mark.asyncio
async def test_local_store_stale_keys(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    old, new = new_key(2), new_key(5)
    for key in (old, new):
        await store.put_stream(key, _chunks(b"data"))
    partial = tmp_path / ".partial" / "dead.part"
    partial.write_bytes(b"half")
    an_hour_ago = time.time() - 3600
    os.utime(tmp_path / old, (an_hour_ago, an_hour_ago))
    os.utime(partial, (an_hour_ago, an_hour_ago))
    assert [k async for k in store.stale_keys(600)] == [old]
    assert not partial.exists()
    assert shard_of_key(old) == 2 and shard_of_key("x/y") is None
