"""Files attached to customers, contacts, deals, tickets and leads, under `/v1/files`
(the file application's prefix).
Path: this file -> deployments/file/service.py -> deployments/file/repo.py -> shards/;
content: this file <-> deployments/file/blobs.py (the blob store).

Where the bytes flow. An upload arrives at a FileService ingress replica, which
streams the body straight into the blob store and calls its `FileService` in process
only for metadata (`prepare_upload` before the first byte is stored, `commit_upload`
after the last). Nothing is chunked through Ray: forwarding chunks to another
replica would cost one Ray call per chunk, each pickled, copied through the object
store (or inlined) and answered. Measured on this (busy, 2-core) machine with a plain
Ray actor, no Serve router on top: a 64 KiB chunk takes 3.9 ms per call (16 MiB/s in
sequence), a 1 MiB chunk 8.3 ms (120 MiB/s), against a local disk write at
page-cache speed. So a 100 MiB upload would spend ~1-6 s in Ray transport alone, plus
a second copy of every byte and a replica's memory per chunk in flight, for no gain:
the replica already holds the socket. Downloads go the same way: `get_content`
returns metadata and the blob key; the route streams the blob. The local blob store
therefore needs a folder every FileService replica sees (one machine, or a shared
volume); across machines use S3.

Visibility: the blob is written under a fresh key (complete or absent, see
blobs.py); only then does the metadata row (status `ready`) commit, with its
history row and the `file.attached` event, in one transaction. A listing can never
show an upload in flight. A crash in between leaves an unreferenced blob, which the
replicas' orphan sweep removes once it is old enough.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse

from cluster.settings import get_settings
from deployments._kit.history import ChangeRead, HistoryQuery
from deployments.file import content
from deployments.file.blobs import Stored, TooLarge, blob_store, measured, new_key
from deployments.file.schemas import FileCommit, FileListQuery, FileRead, Owner
from deployments.file.service import FileService
from gateway.context import (
    CurrentPrincipal,
    RecordId,
    json,
    list_params,
    no_content,
    record,
    service,
)
from gateway.errors import NotFound, Validation
from gateway.listing import Page, field_errors, query_parameters
from gateway.openapi import BINARY, request_body
from gateway.problems import problem
from gateway.uploads import FilePart, MultipartStream
from shards import ids

log = logging.getLogger("nextflow.files")
router = APIRouter(tags=["files"])
Service = Annotated[FileService, Depends(service)]
_SNIFF = 512
_MULTIPART_OVERHEAD = 16 * 1024  # boundaries, part headers and the small fields


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the file is larger than the limit of {limit} bytes")


_OWNER = Owner.model_json_schema()
_UPLOAD = request_body(
    {
        "multipart/form-data": {
            "type": "object",
            "required": ["owner_type", "owner_id", "file"],
            "properties": {**_OWNER["properties"], "file": BINARY},
        }
    },
    "The owner's fields, then the file part (its file name and type are kept).",
)


@router.post("/", status_code=201, response_model=FileRead, openapi_extra=_UPLOAD)
async def upload_file(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Upload one file as `multipart/form-data`: the fields `owner_type` (customer,
    contact, deal, ticket, lead) and `owner_id` first, then the file part (`file`).
    The content streams to the blob store; over `NEXTFLOW_FILE_MAX_BYTES` it is
    refused with 413 and nothing is kept. The file is listed once fully stored."""
    limit = get_settings().file_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _MULTIPART_OVERHEAD:
        raise _too_large(limit)
    form = MultipartStream(request.headers.get("content-type"), request.stream())
    fields: dict[str, str] = {}
    while (part := await form.next_part()) is not None:
        if not isinstance(part, FilePart):
            fields[part.name] = part.value
            continue
        try:
            owner = _owner(fields)
            await svc.prepare_upload(principal, owner)
        except Exception:
            await form.drain(limit)  # refused: answer once the client has sent it all
            raise
        stored = await _store(form, limit, ids.shard_of(owner.owner_id))
        head, blob = stored
        data = FileCommit(
            owner=owner,
            blob_key=blob.key,
            filename=content.sanitise_filename(part.filename),
            content_type=content.content_type_for(part.content_type, head),
            size_bytes=blob.size,
            sha256=blob.sha256,
        )
        created = await svc.commit_upload(principal, data)
        return record(created, 201, f"/v1/files/{created.id}")
    raise Validation("no file part in the form", [{"field": "file", "message": "required"}])


def _owner(fields: dict[str, str]) -> Owner:
    try:
        return Owner.model_validate(
            {"owner_type": fields.get("owner_type"), "owner_id": fields.get("owner_id")}
        )
    except ValidationError as exc:
        raise Validation(
            "owner_type and owner_id must come before the file part", field_errors(exc)
        ) from None


async def _store(form: MultipartStream, limit: int, shard: int) -> tuple[bytes, Stored]:
    """Stream the current file part into the blob store under a new key; returns its
    first bytes (for the type sniff) and what was stored (size, sha256)."""
    head = bytearray()

    async def sniffed() -> AsyncIterator[bytes]:
        async for chunk in form.file_data():
            if len(head) < _SNIFF:
                head.extend(chunk[: _SNIFF - len(head)])
            yield chunk

    key = new_key(shard)
    seen: list[Stored] = []
    try:
        await blob_store().put_stream(key, measured(sniffed(), limit, seen, key))
    except TooLarge:
        await form.drain(limit)  # let the client finish sending, then answer
        raise _too_large(limit) from None
    return bytes(head), seen[0]


@router.get("/", response_model=Page[FileRead], openapi_extra=query_parameters(FileListQuery))
async def list_files(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """One record's files: `owner_type` and `owner_id` (required); `sort` =
    `created_at` or `-created_at` (default); cursor pages."""
    query = await list_params(request, FileListQuery)
    return json(await svc.list(principal, query))


@router.get("/{file_id}", response_model=FileRead)
async def get_file(file_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    return record(await svc.get(principal, file_id))


@router.get("/{file_id}/content")
async def download_file(
    file_id: RecordId,
    request: Request,
    principal: CurrentPrincipal,
    svc: Service,
    verify: Annotated[bool, Query(description="re-hash the stored content first")] = False,
) -> Response:
    """The content, streamed. `ETag` is the sha256; one `Range: bytes=a-b` (or
    `bytes=-n`) gives 206 with `Content-Range`, a range past the end 416.
    `?verify=true` re-reads the stored content and checks its sha256 before sending
    (500 when it differs)."""
    found = await svc.get_content(principal, file_id)
    meta, store = found.file, blob_store()
    etag = f'"{meta.sha256}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": content.content_disposition(meta.filename),
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    try:
        wanted = content.parse_range(request.headers.get("range"), meta.size_bytes)
    except content.RangeNotSatisfiable:
        return problem(
            request,
            416,
            "range-not-satisfiable",
            "Range not satisfiable",
            f"the file has {meta.size_bytes} bytes",
            headers={"Content-Range": f"bytes */{meta.size_bytes}"},
        )
    if_range = request.headers.get("if-range")
    if wanted is not None and if_range is not None and if_range != etag:
        wanted = None  # the client's copy is another version: send it all
    if not await store.exists(found.blob_key):  # deleted a moment ago
        raise NotFound(f"file {file_id} not found")
    if verify and not await _intact(found.blob_key, meta.size_bytes, meta.sha256):
        return problem(
            request, 500, "content-corrupt", "Stored content is damaged",
            f"file {file_id} does not match its sha256",
        )  # fmt: skip
    if wanted is None:
        body = (
            _checked(store.open_range(found.blob_key, 0, meta.size_bytes - 1), file_id, meta.sha256)
            if meta.size_bytes
            else _empty()
        )
        headers["Content-Length"] = str(meta.size_bytes)
        return StreamingResponse(body, 200, headers, media_type=meta.content_type)
    headers["Content-Range"] = wanted.content_range(meta.size_bytes)
    headers["Content-Length"] = str(wanted.length)
    return StreamingResponse(
        store.open_range(found.blob_key, wanted.start, wanted.end),
        206,
        headers,
        media_type=meta.content_type,
    )


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def _checked(body: AsyncIterator[bytes], file_id: int, sha256: str) -> AsyncIterator[bytes]:
    """Pass a full download through, hashing it on the way (cheap next to the I/O);
    a mismatch is logged: the status line has left already, so the client learns it
    from the `ETag` (the sha256) it can compare, or by asking with `?verify=true`."""
    digest = hashlib.sha256()
    async for chunk in body:
        digest.update(chunk)
        yield chunk
    if digest.hexdigest() != sha256:
        log.error("file %s: stored content does not match its sha256", file_id)


async def _intact(key: str, size: int, sha256: str) -> bool:
    digest, seen = hashlib.sha256(), 0
    if size:
        async for chunk in blob_store().open_range(key, 0, size - 1):
            digest.update(chunk)
            seen += len(chunk)
    return seen == size and digest.hexdigest() == sha256


@router.get(
    "/{file_id}/history",
    response_model=Page[ChangeRead],
    openapi_extra=query_parameters(HistoryQuery),
)
async def file_history(
    file_id: RecordId, request: Request, principal: CurrentPrincipal, svc: Service
) -> Response:
    """Created and deleted, newest first."""
    query = await list_params(request, HistoryQuery)
    return json(await svc.history(principal, file_id, query))


@router.delete("/{file_id}", status_code=204)
async def delete_file(file_id: RecordId, principal: CurrentPrincipal, svc: Service) -> Response:
    """Soft delete of the metadata; the content is removed at once (no restore)."""
    return no_content(await svc.delete(principal, file_id))
