"""The S3-compatible blob store against a real local S3 server (moto's, on a free
port): all-or-nothing multipart uploads, ranges, sizes, deletes, stale keys."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from cluster.settings import Settings
from deployments.file.blobs import S3_PART, S3BlobStore, Stored, TooLarge, make_store, measured

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def store(s3_endpoint: str) -> S3BlobStore:
    settings = Settings(
        pg_password="x",  # type: ignore[arg-type]
        jwt_secret="y" * 32,  # type: ignore[arg-type]
        secrets_key="z" * 32,  # type: ignore[arg-type]
        s3_endpoint=s3_endpoint,
        s3_bucket="nextflow-test-files",
        s3_access_key="testing",  # type: ignore[arg-type]
        s3_secret_key="testing",  # type: ignore[arg-type]
    )
    made = make_store(settings)
    assert isinstance(made, S3BlobStore)
    made.client.create_bucket(Bucket="nextflow-test-files")
    return made


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.asyncio
async def test_small_and_multipart_round_trips(store: S3BlobStore) -> None:
    small = b"hello s3"
    assert await store.put_stream("1/small", _chunks(small, 3)) == len(small)
    assert await store.exists("1/small") and await store.size("1/small") == len(small)
    assert b"".join([c async for c in store.open_range("1/small", 1, 4)]) == b"ello"

    big = bytes(range(256)) * (S3_PART * 3 // 2 // 256)  # 12 MiB: two parts
    seen: list[Stored] = []
    stored = await store.put_stream("2/big", measured(_chunks(big, 1 << 20), len(big), seen, "k"))
    assert stored == len(big) and seen[0].sha256 == hashlib.sha256(big).hexdigest()
    got = b"".join([c async for c in store.open_range("2/big", 0, len(big) - 1)])
    assert hashlib.sha256(got).hexdigest() == seen[0].sha256
    tail = b"".join([c async for c in store.open_range("2/big", len(big) - 5, len(big) - 1)])
    assert tail == big[-5:]

    assert {k async for k in store.stale_keys(-60)} >= {"1/small", "2/big"}
    assert [k async for k in store.stale_keys(3600)] == []

    await store.delete("1/small")
    assert not await store.exists("1/small") and await store.size("1/small") is None


@pytest.mark.asyncio
async def test_too_large_leaves_nothing(store: S3BlobStore) -> None:
    big = b"z" * (S3_PART + 1024)
    with pytest.raises(TooLarge):
        await store.put_stream("3/over", measured(_chunks(big, 1 << 20), S3_PART, [], "k"))
    assert not await store.exists("3/over")
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    assert uploads == []  # the multipart upload was aborted
