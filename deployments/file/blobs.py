"""Where file content lives: a small `BlobStore` interface with a local-folder store
(the default) and an S3-compatible one (when `NEXTFLOW_S3_ENDPOINT` is set).

A blob appears under its key only once it is complete: the local store writes to a
`.partial/` file, fsyncs, then renames it into place; S3 makes an object (or a
multipart upload) visible only when it is completed. So a reader never sees half a
blob, and a crash mid-upload leaves a `.partial/` file (local) or an unfinished
multipart upload (S3, expired by a bucket lifecycle rule), never a visible key.

Keys are made by `new_key(shard)`: `<owner's logical shard>/<random>`, never
reused. The File service writes the key into the metadata row only after
`put_stream` returned, so a blob without a row is an orphan of a crash between the
two; `FileService.sweep_orphans` lists blobs older than an age (`stale_keys`), asks
the shard in the key whether a row refers to each, and deletes those none does.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from cluster.settings import Settings, get_settings

CHUNK = 64 * 1024
S3_PART = 8 * 1024 * 1024  # S3 parts must be >= 5 MiB (but the last)


class TooLarge(Exception):
    """The content passed the size cap while it streamed in."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"content larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Stored:
    key: str
    size: int
    sha256: str


class BlobStore(Protocol):
    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Store every chunk under `key`; the key exists only once all are stored.
        On any error (the iterator's included) nothing stays under `key`."""

    def open_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start..end` (inclusive) of the blob, in chunks."""

    async def delete(self, key: str) -> None:
        """Remove the blob; no error when it is already gone."""

    async def exists(self, key: str) -> bool: ...

    async def size(self, key: str) -> int | None:
        """The stored size, or None when there is no such blob."""

    def stale_keys(self, older_than_s: float) -> AsyncIterator[str]:
        """Keys of complete blobs stored longer ago than that (after removing partial
        uploads as old, where the store keeps any)."""


def new_key(shard: int) -> str:
    return f"{shard}/{uuid.uuid4().hex}"


def shard_of_key(key: str) -> int | None:
    head = key.partition("/")[0]
    return int(head) if head.isdigit() else None


async def measured(
    chunks: AsyncIterator[bytes], limit: int, sink: list[Stored], key: str
) -> AsyncIterator[bytes]:
    """Pass the chunks through, counting and hashing them; raise `TooLarge` as soon as
    more than `limit` bytes went by. When the iterator ends, append what was seen to
    `sink` (size and sha256 of exactly the bytes the store received)."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit)
        digest.update(chunk)
        yield chunk
    sink.append(Stored(key, size, digest.hexdigest()))


# -- local folder ----------------------------------------------------------------------
class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.partials = root / ".partial"
        self.partials.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents or key.startswith("."):
            raise ValueError(f"bad blob key {key!r}")
        return path

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        final = self._path(key)
        partial = self.partials / f"{uuid.uuid4().hex}.part"
        size = 0
        try:
            with partial.open("wb") as out:
                async for chunk in chunks:
                    out.write(chunk)  # page cache: no need for a thread per chunk
                    size += len(chunk)
                out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)  # atomic: the key appears complete or not at all
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return size

    async def open_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        with self._path(key).open("rb") as src:
            src.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = await asyncio.to_thread(src.read, min(CHUNK * 4, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    async def stale_keys(self, older_than_s: float) -> AsyncIterator[str]:
        self.sweep_partials(older_than_s)
        cutoff = time.time() - older_than_s
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            for path in folder.iterdir():
                try:
                    if path.is_file() and path.stat().st_mtime < cutoff:
                        yield f"{folder.name}/{path.name}"
                except FileNotFoundError:
                    pass

    def sweep_partials(self, older_than_s: float) -> int:
        """Remove `.partial/` files of uploads that died (older than the cutoff)."""
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self.partials.glob("*.part"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


# -- S3-compatible -------------------------------------------------------------------------
class S3BlobStore:
    """boto3 calls run in threads. Content goes up in 8 MiB multipart parts (one
    `put_object` below that), so memory stays bounded by one part. Tested against a
    local S3 server in tests/integration/test_file_s3.py."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        buffer = bytearray()
        parts: list[dict[str, Any]] = []
        upload_id: str | None = None
        size = 0
        try:
            async for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                if len(buffer) >= S3_PART:
                    if upload_id is None:
                        started = await asyncio.to_thread(
                            self.client.create_multipart_upload, Bucket=self.bucket, Key=key
                        )
                        upload_id = started["UploadId"]
                    parts.append(await self._part(key, upload_id, len(parts) + 1, bytes(buffer)))
                    buffer.clear()
            if upload_id is None:
                await asyncio.to_thread(
                    self.client.put_object, Bucket=self.bucket, Key=key, Body=bytes(buffer)
                )
                return size
            if buffer:
                parts.append(await self._part(key, upload_id, len(parts) + 1, bytes(buffer)))
            await asyncio.to_thread(
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            if upload_id is not None:
                await asyncio.to_thread(
                    self.client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                )
            raise
        return size

    async def _part(self, key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        done = await asyncio.to_thread(
            self.client.upload_part,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
        )
        return {"ETag": done["ETag"], "PartNumber": number}

    async def open_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        got = await asyncio.to_thread(
            self.client.get_object, Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}"
        )
        body = got["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, CHUNK * 4):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.client.delete_object, Bucket=self.bucket, Key=key)

    async def exists(self, key: str) -> bool:
        return await self.size(key) is not None

    async def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = await asyncio.to_thread(self.client.head_object, Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return int(head["ContentLength"])

    async def stale_keys(self, older_than_s: float) -> AsyncIterator[str]:
        """(Unfinished multipart uploads are left to a bucket lifecycle rule.)"""
        cutoff = time.time() - older_than_s
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = await asyncio.to_thread(self.client.list_objects_v2, Bucket=self.bucket, **extra)
            for item in page.get("Contents", []):
                if item["LastModified"].timestamp() < cutoff:
                    yield str(item["Key"])
            token = page.get("NextContinuationToken")
            if not token:
                return


def make_store(settings: Settings) -> BlobStore:
    if settings.s3_endpoint:
        import boto3

        access = settings.s3_access_key.get_secret_value() if settings.s3_access_key else None
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint,
            region_name=settings.s3_region,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
        )
        return S3BlobStore(client, settings.s3_bucket)
    return LocalBlobStore(settings.file_store_dir or settings.data_dir / "files")


@lru_cache(maxsize=1)
def blob_store() -> BlobStore:
    """The process's store, from settings (one per replica)."""
    return make_store(get_settings())
