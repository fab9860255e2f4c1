"""Change history of audited fields, written in the same transaction as the change.

Each service names the fields it audits; a write that changes any of them records
one row: which record, what was done, `{field: [old, new]}` for every audited field
that changed, who did it and when. Sharded databases keep the rows on the record's
logical shard (`_sharded/0002_record_changes.sql`), so history moves with the record.

    changes = diff(before, after, AUDITED)
    await record_change(conn, "deal", deal.id, "updated", changes, principal.user_id)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import Field

from deployments._kit.sql import Params, keyset_page
from deployments._kit.types import Id
from gateway.listing import ListQuery, Order, Page, Position
from gateway.principal import Principal
from gateway.records import Record
from shards import ReadConn, WriteConn
from shards.ids import shard_sql

_COLUMNS = "id, record_type, record_id, action, changes, actor_id, created_at"


class ChangeRead(Record):
    id: Id
    record_type: str
    record_id: Id
    action: str = Field(description="created, updated, deleted, restored, or a verb")
    changes: dict[str, list[Any]] = Field(description="field -> [old, new]")
    actor_id: Id | None
    created_at: datetime


class HistoryQuery(ListQuery):
    sort: str = "-created_at"
    sort_fields: ClassVar[dict[str, type]] = {"created_at": datetime}


def plain(value: Any) -> Any:
    """A JSON-safe form of a field value (money and times as strings)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def diff(
    before: Mapping[str, Any] | None, after: Mapping[str, Any], fields: Iterable[str]
) -> dict[str, list[Any]]:
    """`{field: [old, new]}` for each audited field whose value differs (all of them,
    with old = None, when there is no `before`)."""
    out: dict[str, list[Any]] = {}
    for name in fields:
        old = None if before is None else plain(before.get(name))
        new = plain(after.get(name))
        if old != new:
            out[name] = [old, new]
    return out


async def record_change(
    conn: WriteConn,
    record_type: str,
    record_id: int,
    action: str,
    changes: Mapping[str, list[Any]],
    actor_id: int | None,
    *,
    sharded: bool = True,
) -> None:
    """One history row; an "updated" with no audited change records nothing."""
    if action == "updated" and not changes:
        return
    payload = dict(changes)  # jsonb: the pools encode Python values with orjson
    if sharded:
        await conn.execute(
            f"""INSERT INTO record_changes
                   (id, record_type, record_id, action, changes, actor_id)
                VALUES (nextflow_id({shard_sql('$2::bigint')}::int), $1, $2, $3, $4, $5)""",
            record_type, record_id, action, payload, actor_id,
        )  # fmt: skip
    else:
        await conn.execute(
            """INSERT INTO record_changes (record_type, record_id, action, changes, actor_id)
               VALUES ($1, $2, $3, $4, $5)""",
            record_type, record_id, action, payload, actor_id,
        )  # fmt: skip


async def list_changes(
    conn: ReadConn,
    record_type: str,
    record_id: int,
    limit: int,
    order: Order,
    position: Position | None,
) -> list[ChangeRead]:
    """Up to `limit + 1` history rows of one record after `position`."""
    params = Params()
    where = [f"record_type = {params(record_type)}", f"record_id = {params(record_id)}"]
    sql = keyset_page(
        "record_changes", _COLUMNS, where, "created_at", order, position, limit, params
    )
    rows = await conn.fetch(sql, *params.values)
    return [ChangeRead.model_validate(dict(r)) for r in rows]


def redact_changes(
    principal: Principal, record_type: str, page: Page[ChangeRead]
) -> Page[ChangeRead]:
    """History with the values of fields hidden from the role as null (that the field
    changed still shows)."""
    hidden = principal.hidden.get(record_type)
    if not hidden:
        return page
    data = [
        change.model_copy(
            update={
                "changes": {
                    k: ([None] * len(v) if k in hidden else v) for k, v in change.changes.items()
                }
            }
        )
        for change in page.data
    ]
    return page.model_copy(update={"data": data})
