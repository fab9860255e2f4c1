"""File logic: owner checks and permissions, routing to the owner's shard, recording
what the ingress stored. No SQL here (repo.py), no Ray (app.py), no HTTP parsing
(deployments/file/routes.py streams the bytes, see there why).

An upload is two calls around the streaming, so no call carries content:
`prepare_upload` (permission + the owner exists) before a byte is stored, then
`commit_upload` once the blob is complete: it checks the blob's stored size against
what the route measured and writes the metadata row, history and `file.attached`
event in one transaction. A file is visible exactly when that transaction commits.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from deployments._kit.history import ChangeRead, HistoryQuery, list_changes
from deployments._kit.timeline import TimelineItem, Window
from deployments.file import repo
from deployments.file.blobs import BlobStore, shard_of_key
from deployments.file.schemas import (
    OWNER_PERMISSION,
    FileCommit,
    FileContent,
    FileListQuery,
    FileRead,
    Owner,
)
from gateway.errors import AppError, Forbidden, NotFound, Validation
from gateway.listing import Page, decode_cursor, merge_pages, validate_sort
from gateway.principal import Principal
from shards import ShardNotFound
from shards.client import Shards

log = logging.getLogger("nextflow.files")
# owner type -> async (principal, id) -> the owner record (raises NotFound if absent)
OwnerLookup = Callable[[Principal, int], Awaitable[Any]]


class FileService:
    def __init__(self, shards: Shards, store: BlobStore, owners: Mapping[str, OwnerLookup]):
        self.shards = shards
        self.store = store
        self.owners = dict(owners)

    def _shard(self, record_id: int, kind: str) -> int:
        try:
            return self.shards.shard_for_id(record_id)
        except ShardNotFound:
            raise NotFound(f"{kind} {record_id} not found") from None

    async def _check_owner(self, principal: Principal, owner: Owner, write: bool) -> int:
        """The owner's shard, once the caller may read (write) its files and the owner
        exists (asked of the owner's service, where this deployment has its handle)."""
        prefix = OWNER_PERMISSION[owner.owner_type]
        principal.require(f"{prefix}:write" if write else f"{prefix}:read")
        unknown = Validation(
            f"{owner.owner_type} {owner.owner_id} not found",
            [{"field": "owner_id", "message": f"no such {owner.owner_type}"}],
        )
        try:
            shard = self.shards.shard_for_id(owner.owner_id)
        except ShardNotFound:
            raise unknown from None
        try:
            await self._reach(principal, owner, write)
        except NotFound:
            raise unknown from None
        return shard

    async def _reach(self, principal: Principal, owner: Owner, write: bool) -> None:
        """A file is reached as its owner record is (record-level scopes): NotFound
        unless the owner's service shows the caller the record, Forbidden when the
        caller's write scope does not reach it (`write`)."""
        lookup = self.owners.get(owner.owner_type)
        if lookup is None:  # a deployment without that service: permissions only
            return
        record = await lookup(principal, owner.owner_id)
        permission = f"{OWNER_PERMISSION[owner.owner_type]}:write"
        if not write or principal.owners(permission) is None:
            return
        if owner.owner_type == "contact":  # a contact belongs to its customer's owner
            record = await self.owners["customer"](principal, record.customer_id)
        user = record.assignee_id if owner.owner_type == "ticket" else record.owner_id
        if not principal.reaches(permission, user):
            raise Forbidden(
                f"your role may not change the files of {owner.owner_type} {owner.owner_id}"
            )

    # -- upload ------------------------------------------------------------------------
    async def prepare_upload(self, principal: Principal, owner: Owner) -> None:
        """Before any content is stored: the caller may attach files to `owner`, and
        `owner` exists. 403 / 422 (naming owner_id) otherwise."""
        await self._check_owner(principal, owner, write=True)

    async def commit_upload(self, principal: Principal, data: FileCommit) -> FileRead:
        """Record a stored blob as a file. A blob refused here is removed; one whose
        metadata write failed stays as an orphan (the write may have committed before
        its answer was lost, and a file must never lose its content)."""
        try:
            prefix = OWNER_PERMISSION[data.owner.owner_type]
            principal.require(f"{prefix}:write")
            shard = self._shard(data.owner.owner_id, data.owner.owner_type)
            stored = await self.store.size(data.blob_key)
            if stored != data.size_bytes:
                log.error("blob %s holds %s bytes, not %s", data.blob_key, stored, data.size_bytes)
                raise AppError("the uploaded content was not stored completely; retry")
        except BaseException:
            await self._forget_blob(data.blob_key)
            raise
        return await self.shards.write(shard, repo.create_file, shard, data, principal.user_id)

    async def _forget_blob(self, blob_key: str) -> None:
        try:
            await self.store.delete(blob_key)
        except Exception:  # an orphan blob is harmless; log it for the sweep
            log.warning("could not delete blob %s", blob_key, exc_info=True)

    # -- reads -------------------------------------------------------------------------
    async def _content(self, principal: Principal, file_id: int) -> FileContent:
        shard = self._shard(file_id, "file")
        found = await self.shards.read(shard, repo.get_file, file_id)
        if found is None:
            raise NotFound(f"file {file_id} not found")
        principal.require(f"{OWNER_PERMISSION[found.file.owner_type]}:read")
        owner = Owner(owner_type=found.file.owner_type, owner_id=found.file.owner_id)
        try:
            await self._reach(principal, owner, write=False)
        except NotFound:
            raise NotFound(f"file {file_id} not found") from None
        return found

    async def get(self, principal: Principal, file_id: int) -> FileRead:
        return (await self._content(principal, file_id)).file

    async def get_content(self, principal: Principal, file_id: int) -> FileContent:
        """Metadata plus the blob key, for the route that streams the content."""
        return await self._content(principal, file_id)

    async def list(self, principal: Principal, query: FileListQuery) -> Page[FileRead]:
        """One owner's files, newest first by default; one shard (the owner's)."""
        owner = Owner(owner_type=query.owner_type, owner_id=query.owner_id)
        principal.require(f"{OWNER_PERMISSION[owner.owner_type]}:read")
        if query.count:
            raise Validation(
                "count is not offered on files", [{"field": "count", "message": "not supported"}]
            )
        order = validate_sort(query)
        position = decode_cursor(query)
        try:
            shard = self.shards.shard_for_id(query.owner_id)
            await self._reach(principal, owner, write=False)
        except (ShardNotFound, NotFound):  # no such owner, or not one the caller sees
            return Page[FileRead](data=[], next_cursor=None)
        rows = await self.shards.read(shard, repo.list_files, query, order, position)
        items, cursor = merge_pages([rows], lambda f: (f.created_at, f.id), order, query.limit)
        return Page[FileRead](data=items, next_cursor=cursor)

    async def timeline(
        self, principal: Principal, customer_id: int, window: Window
    ) -> builtins.list[TimelineItem]:
        """The files attached to a customer, for its timeline (the customer service
        checks that the caller may read the customer, and merges)."""
        principal.require("customer:read")
        try:
            shard = self.shards.shard_for_id(customer_id)
        except ShardNotFound:
            raise NotFound(f"customer {customer_id} not found") from None
        return await self.shards.read(shard, repo.timeline, customer_id, window)

    async def history(
        self, principal: Principal, file_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        await self._content(principal, file_id)  # 404, and the owner's read permission
        order = validate_sort(query)
        position = decode_cursor(query)
        shard = self._shard(file_id, "file")
        rows = await self.shards.read(
            shard, list_changes, "file", file_id, query.limit, order, position
        )
        items, cursor = merge_pages([rows], lambda c: (c.created_at, c.id), order, query.limit)
        return Page[ChangeRead](data=items, next_cursor=cursor)

    # -- delete ------------------------------------------------------------------------
    async def delete(self, principal: Principal, file_id: int) -> FileRead:
        """Soft delete of the metadata (kept for history), then the blob at once: a
        deleted file cannot be restored (its content is gone)."""
        current = await self._content(principal, file_id)
        principal.require(f"{OWNER_PERMISSION[current.file.owner_type]}:write")
        owner = Owner(owner_type=current.file.owner_type, owner_id=current.file.owner_id)
        await self._reach(principal, owner, write=True)
        shard = self._shard(file_id, "file")
        deleted = await self.shards.write(shard, repo.delete_file, file_id, principal.user_id)
        if deleted is None:
            raise NotFound(f"file {file_id} not found")
        await self._forget_blob(deleted.blob_key)
        return deleted.file

    # -- orphans -----------------------------------------------------------------------
    async def sweep_orphans(self, principal: Principal, older_than_s: float) -> int:
        """Remove unreferenced blobs older than that now (admins; the replicas also
        sweep periodically, `remove_orphans`)."""
        principal.require("user:write")
        return await self.remove_orphans(older_than_s)

    async def remove_orphans(self, older_than_s: float) -> int:
        """Delete blobs older than `older_than_s` that no file row refers to (their
        upload died between storing the blob and committing the row). The age keeps
        uploads still being committed safe: a commit follows its blob within the
        request timeout. Returns how many were deleted."""
        removed = 0
        async for key in self.store.stale_keys(older_than_s):
            shard = shard_of_key(key)
            if shard is None:
                continue  # not one of ours
            if not await self.shards.write(shard, repo.blob_referenced, key):
                log.info("removing orphan blob %s", key)
                await self._forget_blob(key)
                removed += 1
        return removed
