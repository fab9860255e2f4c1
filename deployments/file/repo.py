"""All SQL of the File service. Each function runs inside the one transaction that
the ShardManager opened on the owner record's shard."""

from __future__ import annotations

from deployments._kit.events import emit
from deployments._kit.history import record_change
from deployments._kit.sql import Params, keyset_page
from deployments._kit.timeline import TimelineItem, Window
from deployments._kit.timeline import fetch as fetch_timeline
from deployments._kit.timeline import source as timeline_source
from deployments.file.schemas import FileCommit, FileContent, FileListQuery, FileRead
from gateway.listing import Order, Position
from shards import ReadConn, WriteConn, single_statement

_FILE = (
    "id, owner_type, owner_id, filename, content_type, size_bytes, sha256, uploaded_by,"
    " version, created_at, updated_at"
)
_AUDITED = ("owner_type", "owner_id", "filename", "content_type", "size_bytes", "sha256")


async def create_file(
    conn: WriteConn, shard: int, data: FileCommit, actor_id: int | None
) -> FileRead:
    """The metadata row (status `ready`), its history row and the `file.attached`
    event, in one transaction: the file is visible exactly when this commits."""
    row = await conn.fetchrow(
        f"""INSERT INTO files
               (id, owner_type, owner_id, filename, content_type, size_bytes, sha256,
                blob_key, uploaded_by)
            VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9)
            RETURNING {_FILE}""",
        shard, data.owner.owner_type, data.owner.owner_id, data.filename, data.content_type,
        data.size_bytes, data.sha256, data.blob_key, actor_id,
    )  # fmt: skip
    created = FileRead.model_validate(dict(row))
    fields = created.model_dump(include=set(_AUDITED))
    await record_change(
        conn, "file", created.id, "created", {k: [None, v] for k, v in fields.items()}, actor_id
    )
    await emit(
        conn,
        "file.attached",
        "file",
        created.id,
        {"file": created.model_dump(mode="json")},
        actor_id,
    )
    return created


@single_statement
async def get_file(conn: ReadConn, file_id: int) -> FileContent | None:
    row = await conn.fetchrow(
        f"SELECT {_FILE}, blob_key FROM files WHERE id = $1 AND deleted_at IS NULL", file_id
    )
    if row is None:
        return None
    values = dict(row)
    blob_key = values.pop("blob_key")
    return FileContent(file=FileRead.model_validate(values), blob_key=blob_key)


async def delete_file(conn: WriteConn, file_id: int, actor_id: int | None) -> FileContent | None:
    """Soft delete (status `deleted`), with history and a `file.deleted` event; None
    when there is no such live file."""
    row = await conn.fetchrow(
        f"""UPDATE files SET deleted_at = now(), status = 'deleted', version = version + 1,
                   updated_at = now()
            WHERE id = $1 AND deleted_at IS NULL RETURNING {_FILE}, blob_key""",
        file_id,
    )
    if row is None:
        return None
    values = dict(row)
    blob_key = values.pop("blob_key")
    deleted = FileRead.model_validate(values)
    await record_change(conn, "file", file_id, "deleted", {}, actor_id)
    await emit(
        conn,
        "file.deleted",
        "file",
        file_id,
        {"file": deleted.model_dump(mode="json")},
        actor_id,
    )
    return FileContent(file=deleted, blob_key=blob_key)


async def list_files(
    conn: ReadConn, query: FileListQuery, order: Order, position: Position | None
) -> list[FileRead]:
    """Up to `limit + 1` live files of one owner after `position`."""
    params = Params()
    where = [
        "deleted_at IS NULL",
        f"owner_type = {params(query.owner_type)}",
        f"owner_id = {params(query.owner_id)}",
    ]
    sql = keyset_page("files", _FILE, where, "created_at", order, position, query.limit, params)
    rows = await conn.fetch(sql, *params.values)
    return [FileRead.model_validate(dict(r)) for r in rows]


async def blob_referenced(conn: WriteConn, blob_key: str) -> bool:
    """On the primary (a write transaction): a row committed a moment ago counts."""
    return bool(await conn.fetchval("SELECT 1 FROM files WHERE blob_key = $1", blob_key))


@single_statement
async def timeline(conn: ReadConn, customer_id: int, window: Window) -> list[TimelineItem]:
    """The live files attached to a customer (`file`), for its timeline."""
    params = Params()
    where = ["owner_type = 'customer'", f"owner_id = {params(customer_id)}", "deleted_at IS NULL"]
    part = timeline_source(
        params, window, kind="'file'", table="files", where=where, at="created_at",
        record_type="'file'", record_id="id", title="'File attached: ' || filename",
        actor="uploaded_by",
        data="""jsonb_build_object('filename', filename, 'content_type', content_type,
                    'size_bytes', size_bytes)""",
    )  # fmt: skip
    return await fetch_timeline(conn, params, window, [part] if window.wants("file") else [])
