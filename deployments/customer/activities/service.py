"""Activity logic and a customer's timeline: permissions, placement, references into
other services, merging. Mixed into `CustomerService` (activities are the customer
service's records, on their customer's shard); no SQL here (repo.py).

A timeline page asks, at once, the customer database (activities and field changes,
one ShardManager call) and, through their deployment handles, sales (deals, stage
changes, orders), support (tickets, comments) and files, each for its own kinds in
the page's window; the runs are merged as a cross-shard list's are."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from deployments._kit.boundary import remote
from deployments._kit.once import write_once
from deployments._kit.sql import written
from deployments._kit.timeline import TimelineItem, TimelineQuery, Window
from deployments.customer.activities import repo
from deployments.customer.activities.schemas import (
    ActivityCreate,
    ActivityListQuery,
    ActivityRead,
    ActivityUpdate,
    TaskListQuery,
)
from gateway.errors import NotFound, Unavailable, Validation
from gateway.idempotency import Once
from gateway.listing import (
    Page,
    decode_cursor,
    merge_pages,
    row_key,
    validate_sort,
)
from gateway.principal import Principal
from shards import ShardNotFound
from shards.client import Shards

log = logging.getLogger("nextflow.activities")
# Who answers which timeline kinds, and the permission each needs.
PEERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sales": (("deal", "deal_stage", "order"), ("deal:read", "order:read")),
    "support": (("ticket", "comment"), ("ticket:read",)),
    "file": (("file",), ("customer:read",)),
}


class Activities:
    """The activity half of `CustomerService` (needs its `shards`, and handles on the
    other services in `peers`: sales, support, marketing, file; a missing one makes
    what needs it 503)."""

    shards: Shards
    peers: dict[str, Any]

    def _shard(self, record_id: int, kind: str) -> int:
        try:
            return self.shards.shard_for_id(record_id)
        except ShardNotFound:
            raise NotFound(f"{kind} {record_id} not found") from None

    async def create_activity(
        self, principal: Principal, data: ActivityCreate, once: Once | None = None
    ) -> ActivityRead:
        """Log an activity on a customer the caller may read (or on a lead, before its
        conversion), on the customer's (the lead's) shard. A deal or ticket it names
        must be that customer's; a task is the caller's unless `assignee_id` says."""
        principal.require("activity:write")
        await self._check_references(principal, data)
        parent = data.customer_id if data.customer_id is not None else data.lead_id
        assert parent is not None  # the model holds one of them
        shard = self._refer(parent, "customer_id" if data.customer_id is not None else "lead_id")
        assignee = (data.assignee_id or principal.user_id) if data.kind == "task" else None
        made = await write_once(
            self.shards, shard, once, ActivityRead,
            repo.create_activity, shard, data, principal.user_id, assignee,
            principal.owners("customer:read"),
        )  # fmt: skip
        if isinstance(made, repo.Absent):
            raise _invalid(made)
        return made

    async def get_activity(self, principal: Principal, activity_id: int) -> ActivityRead:
        principal.require("activity:read")
        found = await self.shards.read(
            self._shard(activity_id, "activity"), repo.get_activity, activity_id,
            principal.owners("activity:read"), principal.user_id,
        )  # fmt: skip
        if found is None:
            raise NotFound(f"activity {activity_id} not found")
        return found

    async def update_activity(
        self,
        principal: Principal,
        activity_id: int,
        data: ActivityUpdate,
        if_version: int | None = None,
    ) -> ActivityRead:
        """A partial update by its owner (or, for a task, its assignee); `done`
        completes or reopens a task."""
        principal.require("activity:write")
        changes = data.model_dump(exclude_unset=True)
        if changes.get("deal_id") is not None or changes.get("ticket_id") is not None:
            current = await self.get_activity(principal, activity_id)
            await self._check_links(
                principal, current.customer_id, changes.get("deal_id"), changes.get("ticket_id")
            )
        outcome = await self.shards.write(
            self._shard(activity_id, "activity"), repo.update_activity, activity_id, changes,
            if_version, principal.user_id, principal.owners("activity:write"),
        )  # fmt: skip
        if isinstance(outcome, repo.Absent):
            raise _invalid(outcome)
        return written(outcome, "activity", activity_id, principal)

    async def delete_activity(
        self, principal: Principal, activity_id: int, if_version: int | None = None
    ) -> ActivityRead:
        principal.require("activity:delete")
        outcome = await self.shards.write(
            self._shard(activity_id, "activity"), repo.delete_activity, activity_id,
            if_version, principal.user_id, principal.owners("activity:delete"),
        )  # fmt: skip
        return written(outcome, "activity", activity_id, principal)

    async def restore_activity(self, principal: Principal, activity_id: int) -> ActivityRead:
        principal.require("activity:delete")
        restored = await self.shards.write(
            self._shard(activity_id, "activity"), repo.restore_activity, activity_id,
            principal.user_id, principal.owners("activity:delete"),
        )  # fmt: skip
        if restored is None:
            raise NotFound(f"activity {activity_id} not found")
        return restored

    async def list_activities(
        self, principal: Principal, customer_id: int, query: ActivityListQuery
    ) -> Page[ActivityRead]:
        """A customer's activities the caller may read, newest first (`at`)."""
        principal.require("activity:read", "customer:read")
        rows = await self._activities(principal, "customer", customer_id, query)
        if rows is None:
            raise NotFound(f"customer {customer_id} not found")
        return _page(rows, query)

    async def list_lead_activities(
        self, principal: Principal, lead_id: int, query: ActivityListQuery
    ) -> Page[ActivityRead]:
        """A lead's activities (those logged before and after its conversion)."""
        principal.require("activity:read", "lead:read")
        await remote(self._peer("marketing").get_lead.remote(principal, lead_id))
        rows = await self._activities(principal, "lead", lead_id, query)
        return _page(rows or [], query)

    async def my_tasks(self, principal: Principal, query: TaskListQuery) -> Page[ActivityRead]:
        """The caller's open tasks on every shard, soonest due first, then those with
        no due date."""
        principal.require("activity:read")
        validate_sort(query)
        position = decode_cursor(query)
        runs = await self.shards.gather(
            repo.open_tasks, principal.user_id, query.due_before, position, query.limit
        )
        page, cursor = merge_pages(runs, repo.due_key, query.order, query.limit)
        return Page[ActivityRead](data=page, next_cursor=cursor)

    async def send_reminders(self, batch: int = 500) -> int:
        """Mark due task reminders as sent, each with its `task.reminder` event, on every
        server (the customer ingress runs this every few seconds); how many."""
        return sum(await self.shards.write_each_server(repo.send_due_reminders, batch))

    async def adopt_lead_activities(
        self, principal: Principal, lead_id: int, customer_id: int
    ) -> int:
        """Give a converted lead's activities to its customer (the lead conversion's
        last step; a repeat does nothing more). On the customer's own shard they keep
        their ids; from another shard they are copied there with new ids (the old id
        kept as `origin_id`) and the originals deleted. How many changed hands."""
        principal.require("lead:convert")
        lead_shard = self._shard(lead_id, "lead")
        customer_shard = self._shard(customer_id, "customer")
        if lead_shard == customer_shard:
            return int(
                await self.shards.write(customer_shard, repo.adopt_lead, lead_id, customer_id)
            )
        rows = await self.shards.write(lead_shard, repo.lead_orphans, lead_id)
        if not rows:
            return 0
        await self.shards.write(
            customer_shard, repo.take_over, customer_shard, lead_id, customer_id, rows
        )
        return int(
            await self.shards.write(lead_shard, repo.drop_moved, lead_id, [r["id"] for r in rows])
        )

    async def timeline(
        self, principal: Principal, customer_id: int, query: TimelineQuery
    ) -> Page[TimelineItem]:
        """What happened to a customer, newest first: its activities, field changes,
        deals and their stage changes, orders, tickets and their comments and its files,
        each kind only when the caller may read it."""
        principal.require("customer:read")
        order = validate_sort(query)
        window = Window(
            frozenset(query.kinds) if query.kinds else None, query.at_from, query.at_before,
            order, decode_cursor(query), query.limit,
        )  # fmt: skip
        shard = self._shard(customer_id, "customer")
        own = self.shards.read(
            shard, repo.timeline, customer_id, window, principal.owners("customer:read"),
            principal.owners("activity:read"), principal.user_id, principal.can("activity:read"),
        )  # fmt: skip
        asked = [
            remote(self._peer(app).timeline.remote(principal, customer_id, window))
            for app, (kinds, needs) in PEERS.items()
            if window.wants(*kinds) and any(principal.can(n) for n in needs)
        ]
        found, *others = await asyncio.gather(own, *asked)
        if found is None:
            raise NotFound(f"customer {customer_id} not found")
        items, cursor = merge_pages([found, *others], row_key("at"), order, query.limit)
        return Page[TimelineItem](data=items, next_cursor=cursor)

    # -- helpers -----------------------------------------------------------------------
    def _peer(self, app: str) -> Any:
        handle = self.peers.get(app)
        if handle is None:
            raise Unavailable(f"the {app} service is not available")
        return handle

    def _refer(self, record_id: int, field: str) -> int:
        """The shard of a record a body names; a 422 on that field when no shard has it."""
        try:
            return self.shards.shard_for_id(record_id)
        except ShardNotFound:
            kind = field.removesuffix("_id")
            raise _invalid(repo.Absent(field, f"{kind} {record_id} not found")) from None

    async def _check_references(self, principal: Principal, data: ActivityCreate) -> None:
        """The lead, deal and ticket a new activity names exist for the caller (and the
        deal and ticket are its customer's)."""
        if data.lead_id is not None:
            await _referenced(
                "lead_id",
                remote(self._peer("marketing").get_lead.remote(principal, data.lead_id)),
            )
        if data.customer_id is None and (data.deal_id or data.ticket_id):
            field = "deal_id" if data.deal_id else "ticket_id"
            raise _invalid(repo.Absent(field, "a lead's activity names no deal or ticket"))
        await self._check_links(principal, data.customer_id, data.deal_id, data.ticket_id)

    async def _check_links(
        self,
        principal: Principal,
        customer_id: int | None,
        deal_id: int | None,
        ticket_id: int | None,
    ) -> None:
        checks = []
        if deal_id is not None:
            sales = self._peer("sales")
            checks.append(("deal_id", deal_id, sales.get_deal.remote(principal, deal_id)))
        if ticket_id is not None:
            support = self._peer("support")
            checks.append(("ticket_id", ticket_id, support.get.remote(principal, ticket_id)))
        found = await asyncio.gather(*(_referenced(f, remote(c)) for f, _, c in checks))
        for (field, record_id, _), record in zip(checks, found, strict=True):
            if customer_id is None or int(record.customer_id) != customer_id:
                kind = field.removesuffix("_id")
                raise _invalid(
                    repo.Absent(field, f"{kind} {record_id} is not one of the customer's")
                )

    async def _activities(
        self, principal: Principal, parent: str, parent_id: int, query: ActivityListQuery
    ) -> list[ActivityRead] | None:
        order = validate_sort(query)
        return await self.shards.read(
            self._shard(parent_id, parent), repo.list_activities, parent, parent_id,
            query.kinds, query.open_tasks, order, decode_cursor(query), query.limit,
            principal.owners("activity:read"), principal.user_id,
            principal.owners("customer:read"),
        )  # fmt: skip


def _page(rows: list[ActivityRead], query: ActivityListQuery) -> Page[ActivityRead]:
    items, cursor = merge_pages([rows], row_key("at"), query.order, query.limit)
    return Page[ActivityRead](data=items, next_cursor=cursor)


async def _referenced(field: str, call: Any) -> Any:
    """A record another service answers for a field of the body; its 404 becomes a
    422 on that field (the body names something that is not there)."""
    try:
        return await call
    except NotFound as exc:
        raise Validation(exc.detail, [{"field": field, "message": "not found"}]) from None


def _invalid(absent: repo.Absent) -> Validation:
    return Validation(absent.message, [{"field": absent.field, "message": absent.message}])
