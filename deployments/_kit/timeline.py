"""A customer's timeline: one stream, newest first, of what happened to it, put
together from several services (deployments/customer/activities/service.py asks
each through its deployment handle). Each service answers the items of its own
kinds as `TimelineItem`s, sorted by (`at`, `id`) and strictly after the page's
position, at most `limit + 1` of them; the caller merges the runs and takes the
first `limit` (`gateway.listing.merge_pages`), as a cross-shard list does.

    items = await self.shards.read(shard, repo.timeline, customer_id, window, owners)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from deployments._kit.sql import Params
from deployments._kit.types import Id
from gateway.listing import ListQuery, Order, Position
from gateway.records import Record
from shards import ReadConn

TimelineKind = Literal[
    "note", "task", "call", "meeting", "email",  # activities (customer)
    "change",  # a field change of the customer or of a contact (its history)
    "deal", "deal_stage", "order",  # sales
    "ticket", "comment",  # support
    "file",  # files attached to the customer
]  # fmt: skip
TIMELINE_KINDS: tuple[str, ...] = (
    "note", "task", "call", "meeting", "email", "change", "deal", "deal_stage", "order",
    "ticket", "comment", "file",
)  # fmt: skip


class TimelineItem(Record):
    """One thing on a customer's timeline. `id` is the item's own (the activity, the
    history row, the stage change, the order, the ticket, the comment, the file);
    `record_type`/`record_id` the record it is about (a comment's ticket, a stage
    change's deal); `data` the kind's details."""

    kind: TimelineKind
    id: Id
    at: datetime
    record_type: str
    record_id: Id
    title: str
    actor_id: Id | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class TimelineQuery(ListQuery):
    kinds: list[TimelineKind] | None = Field(default=None, max_length=12)
    at_from: datetime | None = Field(default=None, description="at >= this")
    at_before: datetime | None = Field(default=None, description="at < this")
    sort: str = "-at"
    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "kind": "kinds",
        "kind[in]": "kinds",
        "at[gte]": "at_from",
        "at[lt]": "at_before",
    }
    list_params: ClassVar[frozenset[str]] = frozenset({"kinds"})
    countable: ClassVar[bool] = False
    sort_fields: ClassVar[dict[str, type]] = {"at": datetime}


@dataclass(frozen=True)
class Window:
    """The part of a timeline one page asks a service for: the kinds wanted (None:
    all), the time range, where the page starts, its order and size."""

    kinds: frozenset[str] | None
    at_from: datetime | None
    at_before: datetime | None
    order: Order
    position: Position | None
    limit: int

    def wants(self, *kinds: str) -> bool:
        return self.kinds is None or any(k in self.kinds for k in kinds)

    def where(self, params: Params, at: str, row_id: str) -> list[str]:
        """Conditions on a source's time (`at`) and id columns for this page."""
        out = []
        if self.at_from is not None:
            out.append(f"{at} >= {params(self.at_from)}")
        if self.at_before is not None:
            out.append(f"{at} < {params(self.at_before)}")
        if self.position is not None:
            op = "<" if self.order.descending else ">"
            out.append(
                f"({at}, {row_id}) {op} ({params(self.position.value)}, {params(self.position.id)})"
            )
        return out

    def tail(self, params: Params) -> str:
        """ORDER BY and LIMIT of a source's query over `at`, `id` (output names)."""
        direction = "DESC" if self.order.descending else "ASC"
        return f"ORDER BY at {direction}, id {direction} LIMIT {params(self.limit + 1)}"


def sorted_run(items: list[TimelineItem], window: Window) -> list[TimelineItem]:
    """One source's items in the window's order, at most `limit + 1`."""
    items.sort(key=lambda i: (i.at, i.id), reverse=window.order.descending)
    return items[: window.limit + 1]


def source(
    params: Params,
    window: Window,
    *,
    kind: str,
    table: str,
    where: list[str],
    at: str,
    row_id: str = "id",
    record_type: str,
    record_id: str,
    title: str,
    actor: str = "NULL::bigint",
    data: str = "'{}'::jsonb",
) -> str:
    """One kind's part of a service's timeline query: its rows in the window as
    `TimelineItem` columns, sorted and cut at `limit + 1` (SQL expressions over
    `table`; `kind` and `record_type` are SQL too, usually quoted constants)."""
    conditions = " AND ".join([*where, *window.where(params, at, row_id)])
    return f"""(SELECT {kind} AS kind, {row_id} AS id, {at} AS at, {record_type} AS record_type,
                       {record_id} AS record_id, {title} AS title, {actor} AS actor_id,
                       {data} AS data
                FROM {table} WHERE {conditions} {window.tail(params)})"""


async def fetch(
    conn: ReadConn, params: Params, window: Window, parts: list[str]
) -> list[TimelineItem]:
    """The items of these parts (`source`), as one sorted run of the window."""
    if not parts:
        return []
    rows = await conn.fetch(" UNION ALL ".join(parts), *params.values)
    return sorted_run([TimelineItem.model_validate(dict(r)) for r in rows], window)
