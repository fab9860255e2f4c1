"""The File service over HTTP: a checksummed round trip with ranges, the size cap
(413, nothing kept), unknown owners, permissions, no listing of an upload in flight,
delete."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from ray import serve

from cluster.settings import Settings
from gateway.principal import Principal
from shards import ids

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"
LIMIT = 256 * 1024  # NEXTFLOW_FILE_MAX_BYTES in tests/conftest.py


def customer(http: httpx.Client, headers: dict[str, str]) -> str:
    made = http.post("/v1/customers", headers=headers, json={"name": "Files Co"})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def upload(
    http: httpx.Client,
    headers: dict[str, str],
    owner_id: str,
    content: bytes,
    name: str = "notes.txt",
    owner_type: str = "customer",
    content_type: str = "text/plain",
) -> httpx.Response:
    return http.post(
        "/v1/files",
        headers=headers,
        data={"owner_type": owner_type, "owner_id": owner_id},
        files={"file": (name, content, content_type)},
    )


def listed(http: httpx.Client, headers: dict[str, str], owner_id: str) -> list[str]:
    page = http.get(
        "/v1/files", headers=headers, params={"owner_type": "customer", "owner_id": owner_id}
    )
    assert page.status_code == 200, page.text
    return [f["id"] for f in page.json()["data"]]


def blobs(settings: Settings) -> list[Path]:
    """Every stored blob and every partial upload in the local store."""
    root = settings.data_dir / "files"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def outbox(settings: Settings, file_id: int) -> list[dict[str, object]]:
    """The file's events in the outbox of the `file` database, on whichever server."""

    async def read() -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for address in settings.shard_server_addresses():
            conn = await asyncpg.connect(settings.dsn_for(address.host, address.port, "file"))
            try:
                found = await conn.fetch(
                    "SELECT type, aggregate_type, data FROM outbox WHERE aggregate_id = $1"
                    " ORDER BY id",
                    file_id,
                )
            finally:
                await conn.close()
            rows += [dict(r) for r in found]
        return rows

    return asyncio.run(read())


def test_round_trip_with_checksum_and_ranges(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    owner = customer(http, admin)
    data = os.urandom(1000) + b"tail!"
    made = upload(http, admin, owner, data, name="../Quarterly report.bin", content_type="x")
    assert made.status_code == 201, made.text
    meta = made.json()
    assert made.headers["location"] == f"/v1/files/{meta['id']}"
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["size_bytes"] == len(data)
    assert meta["filename"] == "Quarterly report.bin"
    assert meta["content_type"] == "application/octet-stream"
    assert (meta["owner_type"], meta["owner_id"]) == ("customer", owner)
    assert ids.shard_of(int(meta["id"])) == ids.shard_of(int(owner))
    assert http.get(f"/v1/files/{meta['id']}", headers=admin).json() == meta

    got = http.get(f"/v1/files/{meta['id']}/content", headers=admin)
    assert got.status_code == 200
    assert got.content == data
    assert hashlib.sha256(got.content).hexdigest() == meta["sha256"]
    assert got.headers["content-length"] == str(len(data))
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["etag"] == f'"{meta["sha256"]}"'
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["content-disposition"].startswith(
        'attachment; filename="Quarterly report.bin"'
    )
    verified = http.get(f"/v1/files/{meta['id']}/content?verify=true", headers=admin)
    assert verified.status_code == 200 and verified.content == data

    first = http.get(f"/v1/files/{meta['id']}/content", headers={**admin, "Range": "bytes=0-9"})
    assert first.status_code == 206
    assert first.content == data[:10]
    assert first.headers["content-range"] == f"bytes 0-9/{len(data)}"
    assert first.headers["content-length"] == "10"
    last = http.get(f"/v1/files/{meta['id']}/content", headers={**admin, "Range": "bytes=-5"})
    assert last.status_code == 206 and last.content == b"tail!"
    assert last.headers["content-range"] == f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}"
    past = http.get(
        f"/v1/files/{meta['id']}/content", headers={**admin, "Range": f"bytes={len(data)}-"}
    )
    assert past.status_code == 416
    assert past.headers["content-type"] == PROBLEM
    assert past.headers["content-range"] == f"bytes */{len(data)}"

    assert listed(http, admin, owner) == [meta["id"]]
    history = http.get(f"/v1/files/{meta['id']}/history", headers=admin).json()["data"]
    assert [c["action"] for c in history] == ["created"]
    events = outbox(serve_app, int(meta["id"]))
    assert [(e["type"], e["aggregate_type"]) for e in events] == [("file.attached", "file")]
    attached = events[0]["data"]
    attached = orjson.loads(attached) if isinstance(attached, str) else attached
    assert attached["file"]["sha256"] == meta["sha256"]

    assert http.delete(f"/v1/files/{meta['id']}", headers=admin).status_code == 204
    assert http.get(f"/v1/files/{meta['id']}", headers=admin).status_code == 404
    assert http.get(f"/v1/files/{meta['id']}/content", headers=admin).status_code == 404
    assert listed(http, admin, owner) == []
    assert http.delete(f"/v1/files/{meta['id']}", headers=admin).status_code == 404
    assert [e["type"] for e in outbox(serve_app, int(meta["id"]))] == [
        "file.attached",
        "file.deleted",
    ]


def test_file_names_in_any_script(http: httpx.Client, admin: dict[str, str]) -> None:
    """Issue 28: `filename=😀.txt` was a 500. Any Unicode name is kept and sent back
    with an ASCII fallback and its RFC 6266/5987 `filename*`."""
    owner = customer(http, admin)
    made = upload(http, admin, owner, b"hello", name="😀 Bericht für Zoë.txt")
    assert made.status_code == 201, made.text
    assert made.json()["filename"] == "😀 Bericht für Zoë.txt"
    got = http.get(f"/v1/files/{made.json()['id']}/content", headers=admin)
    assert got.status_code == 200 and got.content == b"hello"
    disposition = got.headers["content-disposition"]
    assert disposition.isascii()
    assert disposition.startswith('attachment; filename="_ Bericht f_r Zo_.txt"; ')
    assert disposition.endswith("filename*=UTF-8''%F0%9F%98%80%20Bericht%20f%C3%BCr%20Zo%C3%AB.txt")

    # A client that sends only the extended form (RFC 5987) is understood too.
    boundary = "nfBoundary7"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="owner_type"\r\n\r\ncustomer\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="owner_id"\r\n\r\n{owner}\r\n'
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
        f"filename*=UTF-8''%E2%82%AC%20rates.txt\r\nContent-Type: text/plain\r\n\r\n"
        f"ok\r\n--{boundary}--\r\n"
    ).encode()
    extended = http.post(
        "/v1/files",
        headers={**admin, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body,
    )
    assert extended.status_code == 201, extended.text
    assert extended.json()["filename"] == "€ rates.txt"


def test_size_cap_keeps_nothing(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    owner = customer(http, admin)
    before = set(blobs(serve_app))
    # Just over the cap: refused while streaming (the length alone does not tell).
    over = upload(http, admin, owner, b"x" * (LIMIT + 1))
    assert over.status_code == 413, over.text
    assert over.headers["content-type"] == PROBLEM
    # Far over, with a Content-Length: refused before reading the body.
    far = upload(http, admin, owner, b"y" * (LIMIT + 64 * 1024))
    assert far.status_code == 413, far.text
    assert listed(http, admin, owner) == []
    assert set(blobs(serve_app)) == before
    exact = upload(http, admin, owner, b"z" * LIMIT)  # the cap itself is allowed
    assert exact.status_code == 201, exact.text


def test_unknown_owner_and_bad_forms(http: httpx.Client, admin: dict[str, str]) -> None:
    missing_deal = str(ids.make_id(int(time.time() * 1000), 1, 1))
    refused = upload(http, admin, missing_deal, b"abc", owner_type="deal")
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["owner_id"]
    no_type = http.post("/v1/files", headers=admin, files={"file": ("a.txt", b"abc")})
    assert no_type.status_code == 422
    assert {e["field"] for e in no_type.json()["errors"]} >= {"owner_type"}
    owner = customer(http, admin)
    no_file = http.post(  # multipart, but only plain fields
        "/v1/files",
        headers=admin,
        data={"owner_type": "customer", "owner_id": owner},
        files={"note": (None, b"no file here")},
    )
    assert no_file.status_code == 422
    assert no_file.json()["errors"][0]["field"] == "file"
    as_json = http.post("/v1/files", headers=admin, json={"owner_id": owner})
    assert as_json.status_code == 422
    assert as_json.json()["errors"][0]["field"] == "content-type"
    bad_list = http.get(
        "/v1/files", headers=admin, params={"owner_type": "planet", "owner_id": "1"}
    )
    assert bad_list.status_code == 422


def test_viewer_reads_but_cannot_upload_or_delete(
    http: httpx.Client, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    owner = customer(http, admin)
    assert upload(http, viewer, owner, b"nope").status_code == 403
    made = upload(http, admin, owner, b"%PDF-1.4 tiny", name="t.pdf", content_type="text/html")
    assert made.status_code == 201
    assert made.json()["content_type"] == "application/pdf"  # the bytes, not the claim
    file_id = made.json()["id"]
    assert http.get(f"/v1/files/{file_id}/content", headers=viewer).content == b"%PDF-1.4 tiny"
    assert http.delete(f"/v1/files/{file_id}", headers=viewer).status_code == 403
    assert listed(http, viewer, owner) == [file_id]


def test_upload_in_flight_is_not_listed(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    owner = customer(http, admin)
    boundary = "nextflow-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="owner_type"\r\n\r\ncustomer\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="owner_id"\r\n\r\n{owner}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    sent_half, go_on = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        yield head + b"a" * 50_000
        sent_half.set()
        go_on.wait(30)
        yield b"b" * 50_000 + f"\r\n--{boundary}--\r\n".encode()

    result: dict[str, httpx.Response] = {}

    def send() -> None:
        with httpx.Client(base_url=serve_app.serve_url, timeout=30) as client:
            result["r"] = client.post(
                "/v1/files",
                headers={**admin, "Content-Type": f"multipart/form-data; boundary={boundary}"},
                content=body(),
            )

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert sent_half.wait(30)
        time.sleep(0.3)  # let the first half reach the blob store
        assert listed(http, admin, owner) == []
    finally:
        go_on.set()
        sender.join(30)
    assert result["r"].status_code == 201, result["r"].text
    meta = result["r"].json()
    assert meta["size_bytes"] == 100_000
    assert meta["sha256"] == hashlib.sha256(b"a" * 50_000 + b"b" * 50_000).hexdigest()
    assert listed(http, admin, owner) == [meta["id"]]


def test_orphan_sweep_through_the_handle(
    ray_driver: None, http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    """A blob no row refers to (a crash between storing and committing) goes once it
    is old enough; a file's blob, however old, stays."""
    owner = customer(http, admin)
    made = upload(http, admin, owner, b"keep me")
    assert made.status_code == 201
    shard = ids.shard_of(int(owner))
    root = serve_app.data_dir / "files"
    orphan = root / str(shard) / ("0" * 32)
    orphan.write_bytes(b"left by a crash")
    an_hour_ago = time.time() - 3600
    for path in (orphan, *(root / str(shard)).iterdir()):
        os.utime(path, (an_hour_ago, an_hour_ago))
    young = root / str(shard) / ("1" * 32)
    young.write_bytes(b"an upload still being committed")

    me = http.get("/v1/auth/me", headers=admin).json()
    principal = Principal(
        user_id=int(me["id"]), role="admin", permissions=frozenset({"user:write"})
    )
    handle = serve.get_app_handle("file")
    removed = handle.sweep_orphans.remote(principal, 600).result()
    assert removed >= 1
    assert not orphan.exists() and young.exists()
    got = http.get(f"/v1/files/{made.json()['id']}/content", headers=admin)
    assert got.status_code == 200 and got.content == b"keep me"
    young.unlink()
