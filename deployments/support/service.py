"""Ticket, comment, queue and SLA logic: permissions, routing to shards, assignment,
breach state as of now. No SQL here (repo.py, config_repo.py) and no Ray or FastAPI
(deployment.py).

Record-level access: a ticket belongs to its assignee. Reads and lists reach what
`ticket:read` reaches, changes (fields, status, comments, assignment) what
`ticket:write` reaches, delete and restore what `ticket:delete` reaches; an
unassigned ticket only unscoped, except that anyone whose `ticket:read` reaches it
may take it for themselves. Queues, SLA policies, auto-assignment and the SLA sweep
are unscoped."""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from deployments._kit.batch import BatchDelete, Plan
from deployments._kit.batch import run as run_batch
from deployments._kit.custom_fields import Definitions, ObjectFields, ObjectSchema
from deployments._kit.history import ChangeRead, HistoryQuery, list_changes
from deployments._kit.sql import Denied, Stale, written
from deployments._kit.timeline import TimelineItem, Window
from deployments._kit.unique_values import Records
from deployments.support import config_repo, repo, rules
from deployments.support.schemas import (
    CommentCreate,
    CommentListQuery,
    CommentRead,
    QueueCreate,
    QueueListQuery,
    QueueMemberPut,
    QueueRead,
    QueueUpdate,
    SlaPolicyPut,
    SlaPolicyRead,
    SweepResult,
    TicketAssign,
    TicketBatch,
    TicketBatchCreate,
    TicketBatchResult,
    TicketBatchUpdate,
    TicketCreate,
    TicketListQuery,
    TicketRead,
    TicketStatusChange,
    TicketUpdate,
)
from gateway.errors import AppError, Conflict, NotFound, PreconditionFailed, Validation
from gateway.idempotency import Once
from gateway.listing import Page, decode_cursor, merge_pages, validate_sort
from gateway.principal import Principal
from shards import ShardNotFound
from shards.client import Database, Shards

T = TypeVar("T")
log = logging.getLogger("nextflow.support")


class Customers(Protocol):
    """What support asks of the Customer service (its deployment handle, adapted)."""

    async def exists(self, principal: Principal, customer_id: int) -> bool: ...

    async def customer_of_contact(self, principal: Principal, contact_id: int) -> int | None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


class SupportService:
    def __init__(
        self,
        shards: Shards,
        config: Database,
        customers: Customers,
        now: Callable[[], datetime] = utc_now,
        fields: Definitions | None = None,
    ) -> None:
        """`fields`: the custom field definitions (None: tickets' kept unchecked)."""
        self.shards = shards
        self.config = config
        self.customers = customers
        self.now = now
        self.ticket_fields = ObjectFields("tickets", fields, Records(shards, "tickets"))

    async def purge_custom_field(self, principal: Principal, object_name: str, key: str) -> int:
        """Remove a deleted custom field's values from every ticket (the auth
        service's purge, `field:write`); how many records held one."""
        principal.require("field:write")
        return await self.ticket_fields.purge(key)

    async def ticket_schema(self, principal: Principal) -> ObjectSchema:
        """The ticket create body as JSON Schema with the live custom fields."""
        principal.require("ticket:read")
        return await self.ticket_fields.schema(TicketCreate)

    async def _shown(self, principal: Principal, ticket: TicketRead) -> TicketRead:
        """What the caller sees of a ticket: live SLA state, hidden fields null, the
        live custom fields."""
        return await self.ticket_fields.shown(principal.redact("ticket", self._live(ticket)))

    def _shard(self, record_id: int, kind: str) -> int:
        try:
            return self.shards.shard_for_id(record_id)
        except ShardNotFound:
            raise NotFound(f"{kind} {record_id} not found") from None

    def _live(self, ticket: TicketRead) -> TicketRead:
        """The ticket with its breach state as of now (stored flags may lag the sweep)."""
        c = rules.with_breaches(repo.clock(ticket.model_dump()), self.now())
        if (c.first_response_breached, c.resolution_breached) == (
            ticket.first_response_breached,
            ticket.resolution_breached,
        ):
            return ticket
        live = ticket.model_copy(
            update={
                "first_response_breached": c.first_response_breached,
                "resolution_breached": c.resolution_breached,
                "sla_breached": c.first_response_breached or c.resolution_breached,
            }
        )
        live._read_after = ticket.read_after
        return live

    async def _record(
        self,
        principal: Principal,
        outcome: TicketRead | Stale | Denied | repo.Refused | None,
        ticket_id: int,
    ) -> TicketRead:
        """The ticket a guarded change returned, as the caller sees it, or its error."""
        return await self._shown(principal, _written(outcome, ticket_id, principal=principal))

    # -- tickets -----------------------------------------------------------------------
    async def create(self, principal: Principal, data: TicketCreate) -> TicketRead:
        data = await self.ticket_fields.create(data)
        shard, placed = await self._new_ticket(principal, data)
        async with await self.ticket_fields.claim(data.custom_fields):
            created = await self.shards.write(
                shard, repo.create_ticket, shard, data, *placed, principal.user_id
            )
        return await self._shown(principal, created)

    async def _new_ticket(
        self, principal: Principal, data: TicketCreate
    ) -> tuple[int, tuple[int | None, int | None, Any]]:
        """A new ticket's shard and (queue, assignee, SLA policy), once a create's
        checks have passed: `ticket:assign` for another assignee, the customer and
        contact, the queue; the assignee picked by the queue when none is named."""
        principal.require("ticket:write")
        if data.assignee_id is not None and data.assignee_id != principal.user_id:
            principal.require("ticket:assign")
        await self._check_customer(principal, data.customer_id, data.contact_id)
        shard = self.shards.shard_for_id(data.customer_id)
        route, policy = await asyncio.gather(
            self.config.read(config_repo.routing, data.queue_id),
            self.config.read(config_repo.get_policy, data.priority),
        )
        if data.queue_id is not None and route is None:
            raise Validation(
                f"queue {data.queue_id} does not exist",
                [{"field": "queue_id", "message": "no such queue"}],
            )
        assignee_id = data.assignee_id
        if assignee_id is None and route is not None:
            assignee_id = await self._auto_assignee(route)
        return shard, (route.queue_id if route else None, assignee_id, policy)

    async def batch(
        self, principal: Principal, body: TicketBatch, key: Once | None = None
    ) -> TicketBatchResult:
        """Creates, updates and deletes of tickets, each checked as the single
        operation is (every item's checks at once, a create's assignee picked by its
        queue then), written in one transaction per logical shard
        (deployments/_kit/batch.py). A retried batch replays the tickets it made; the
        queue's round-robin moved on for them again (it is not in the transaction)."""
        plan = Plan(principal, "ticket", TicketRead, TicketBatchResult, key, finish=self._live)

        async def prepare(
            i: int, item: TicketBatchCreate | TicketBatchUpdate | BatchDelete
        ) -> None:
            field = f"items.{i}.data.custom_fields"
            if isinstance(item, TicketBatchCreate):
                data = await self.ticket_fields.create(item.data, field)
                shard, placed = await self._new_ticket(principal, data)
                once = plan.item_key(i, item)
                claim = await self.ticket_fields.claim(data.custom_fields, key=once, field=field)
                plan.add(
                    i, "create", shard, repo.create_ticket, shard, data, *placed,
                    principal.user_id, key=once, claim=claim,
                )  # fmt: skip
                return
            shard = self._shard(item.id, "ticket")
            if isinstance(item, TicketBatchUpdate):
                principal.require("ticket:write")
                changes, policy = await self._ticket_changes(principal, item.id, item.data, field)
                claim = await self.ticket_fields.claim(
                    changes.get("custom_fields"), record=item.id, field=field
                )
                plan.add(
                    i, "update", shard, repo.update_ticket, item.id, changes, item.if_match,
                    policy, principal.user_id, principal.owners("ticket:write"),
                    record_id=item.id, key=plan.item_key(i, item), explain=_refused, claim=claim,
                )  # fmt: skip
            else:
                plan.change(i, item, shard, repo.delete_ticket, "ticket:delete")

        done = await run_batch(plan, self.shards, body.items, prepare)
        return await self.ticket_fields.shown_results(done)

    async def _check_customer(
        self, principal: Principal, customer_id: int, contact_id: int | None
    ) -> None:
        try:
            self.shards.shard_for_id(customer_id)
            exists = await self.customers.exists(principal, customer_id)
        except (ShardNotFound, NotFound):
            exists = False
        if not exists:
            raise Validation(
                f"customer {customer_id} does not exist",
                [{"field": "customer_id", "message": "no such customer"}],
            )
        if contact_id is None:
            return
        try:
            owner = await self.customers.customer_of_contact(principal, contact_id)
        except NotFound:
            owner = None
        if owner != customer_id:
            raise Validation(
                f"contact {contact_id} is not a contact of customer {customer_id}",
                [{"field": "contact_id", "message": "no such contact of this customer"}],
            )

    async def _auto_assignee(self, route: config_repo.Routing) -> int | None:
        """Round-robin: the next active member after the cursor. Least-busy: the active
        member with the fewest open tickets over every shard (ties in round-robin
        order). Both move the queue's cursor in one transaction on support_config."""
        if route.strategy == "round_robin":
            return await self.config.write(config_repo.pick_assignee, route.queue_id, None)
        if route.strategy == "least_busy":
            members = await self.config.read(config_repo.active_members, route.queue_id)
            if not members:
                return None
            counts: dict[int, int] = {}
            for per_server in await self.shards.gather(repo.open_counts, members):
                for user_id, n in per_server.items():
                    counts[user_id] = counts.get(user_id, 0) + n
            return await self.config.write(config_repo.pick_assignee, route.queue_id, counts)
        return None

    async def get(self, principal: Principal, ticket_id: int) -> TicketRead:
        principal.require("ticket:read")
        shard = self._shard(ticket_id, "ticket")
        found = await self.shards.read(
            shard, repo.get_ticket, ticket_id, principal.owners("ticket:read")
        )
        if found is None:
            raise NotFound(f"ticket {ticket_id} not found")
        return await self._shown(principal, found)

    async def update(
        self,
        principal: Principal,
        ticket_id: int,
        data: TicketUpdate,
        if_version: int | None = None,
    ) -> TicketRead:
        principal.require("ticket:write")
        shard = self._shard(ticket_id, "ticket")
        changes, policy = await self._ticket_changes(principal, ticket_id, data)
        async with await self.ticket_fields.claim(changes.get("custom_fields"), record=ticket_id):
            outcome = await self.shards.write(
                shard, repo.update_ticket, ticket_id, changes, if_version, policy,
                principal.user_id, principal.owners("ticket:write"),
            )  # fmt: skip
            return await self._record(principal, outcome, ticket_id)

    async def set_status(
        self,
        principal: Principal,
        ticket_id: int,
        data: TicketStatusChange,
        if_version: int | None = None,
    ) -> TicketRead:
        principal.require("ticket:write")
        shard = self._shard(ticket_id, "ticket")
        outcome = await self.shards.write(
            shard, repo.change_status, ticket_id, data.status, if_version, principal.user_id,
            principal.owners("ticket:write"),
        )  # fmt: skip
        return await self._record(principal, outcome, ticket_id)

    async def assign(
        self,
        principal: Principal,
        ticket_id: int,
        data: TicketAssign,
        if_version: int | None = None,
    ) -> TicketRead:
        """Give the ticket to an agent (`ticket:assign`), or take it yourself. Either
        way `ticket:write` must reach its current assignee; an unassigned ticket may
        also be taken by anyone whose `ticket:read` reaches it (picked up from the
        desk)."""
        principal.require("ticket:write")
        taking = data.assignee_id == principal.user_id
        if not taking:
            principal.require("ticket:assign")
        shard = self._shard(ticket_id, "ticket")
        outcome = await self.shards.write(
            shard, repo.assign_ticket, ticket_id, data.assignee_id, if_version, principal.user_id,
            principal.owners("ticket:write"), taking and principal.reaches("ticket:read", None),
        )  # fmt: skip
        return await self._record(principal, outcome, ticket_id)

    async def _ticket_changes(
        self,
        principal: Principal,
        ticket_id: int,
        data: TicketUpdate,
        field: str = "custom_fields",
    ) -> tuple[dict[str, Any], Any]:
        """An update's changes and (when the priority changes) its new SLA policy, once
        its checks have passed: the queue exists, a new contact is the customer's, the
        custom fields are the live ones'."""
        changes = await self.ticket_fields.changes(data.model_dump(exclude_unset=True), field)
        if "queue_id" in changes and not await self.config.read(
            config_repo.queue_exists, changes["queue_id"]
        ):
            raise Validation(
                f"queue {changes['queue_id']} does not exist",
                [{"field": "queue_id", "message": "no such queue"}],
            )
        if changes.get("contact_id") is not None:
            current = await self.get(principal, ticket_id)
            await self._check_customer(principal, current.customer_id, changes["contact_id"])
        policy = None
        if "priority" in changes:
            policy = await self.config.read(config_repo.get_policy, changes["priority"])
        return changes, policy

    async def delete(
        self, principal: Principal, ticket_id: int, if_version: int | None = None
    ) -> TicketRead:
        principal.require("ticket:delete")
        shard = self._shard(ticket_id, "ticket")
        outcome = await self.shards.write(
            shard, repo.delete_ticket, ticket_id, if_version, principal.user_id,
            principal.owners("ticket:delete"),
        )  # fmt: skip
        return await self._shown(principal, _written(outcome, ticket_id, principal=principal))

    async def restore(self, principal: Principal, ticket_id: int) -> TicketRead:
        principal.require("ticket:delete")
        shard = self._shard(ticket_id, "ticket")
        async with await self.ticket_fields.claim_restore(ticket_id):
            restored = await self.shards.write(
                shard, repo.restore_ticket, ticket_id, principal.user_id,
                principal.owners("ticket:delete"),
            )  # fmt: skip
            if restored is None:
                raise NotFound(f"ticket {ticket_id} not found")
        return await self._shown(principal, restored)

    async def list(self, principal: Principal, query: TicketListQuery) -> Page[TicketRead]:
        """Tickets across every shard in one global order (one shard when the query
        names a customer), a page at a time; only those `ticket:read` reaches."""
        principal.require("ticket:read")
        order = validate_sort(query)
        sort = await self.ticket_fields.sort(order)
        position = decode_cursor(query)
        position = sort.position(position) if sort else position
        owners = principal.owners("ticket:read")
        custom = await self.ticket_fields.filters(query.custom)
        if query.customer_id is not None:
            try:
                shard = self.shards.shard_for_id(query.customer_id)
            except ShardNotFound:
                return Page[TicketRead](data=[], total=0 if query.count else None)
            runs_call: Any = _one(
                self.shards.read(
                    shard, repo.list_tickets, [shard], query, order, position, owners, custom, sort
                )
            )
            count_call: Any = _one(
                self.shards.read(shard, repo.count_tickets, [shard], query, owners, custom)
            )
        else:
            runs_call = self.shards.gather(
                repo.list_tickets, query, order, position, owners, custom, sort
            )
            count_call = self.shards.gather(repo.count_tickets, query, owners, custom)
        if query.count:
            runs, counts = await asyncio.gather(runs_call, count_call)
            total: int | None = sum(counts)
        else:
            runs, total = await runs_call, None
        key = sort.row_key if sort else _ticket_key(order.field)
        items, cursor = merge_pages(runs, key, order, query.limit)
        items = principal.redact_all("ticket", [self._live(t) for t in items])
        items = await self.ticket_fields.shown_all(items)
        return Page[TicketRead](data=items, next_cursor=cursor, total=total)

    async def list_for_customer(
        self, principal: Principal, customer_id: int, query: TicketListQuery
    ) -> Page[TicketRead]:
        """A customer's tickets: one shard, since tickets live with their customer."""
        principal.require("ticket:read")
        if query.customer_id is not None and query.customer_id != customer_id:
            raise Validation(
                "customer_id is given by the path",
                [{"field": "customer_id", "message": "not allowed here"}],
            )
        self._shard(customer_id, "customer")
        if not await self.customers.exists(principal, customer_id):
            raise NotFound(f"customer {customer_id} not found")
        return await self.list(principal, query.model_copy(update={"customer_id": customer_id}))

    async def timeline(
        self, principal: Principal, customer_id: int, window: Window
    ) -> builtins.list[TimelineItem]:
        """Support's part of a customer's timeline (tickets and their comments the
        caller may read); the customer service checks the customer and merges."""
        if not principal.can("ticket:read"):
            return []
        return await self.shards.read(
            self._shard(customer_id, "customer"), repo.timeline, customer_id, window,
            principal.owners("ticket:read"),
        )  # fmt: skip

    async def history(
        self, principal: Principal, ticket_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of a ticket, live or deleted, that `ticket:read` reaches."""
        principal.require("ticket:read")
        order = validate_sort(query)
        position = decode_cursor(query)
        shard = self._shard(ticket_id, "ticket")
        rows = await self.shards.read(
            shard, repo.list_ticket_changes, ticket_id, query.limit, order, position,
            principal.owners("ticket:read"),
        )  # fmt: skip
        if rows is None:
            raise NotFound(f"ticket {ticket_id} not found")
        items, cursor = merge_pages([rows], lambda c: (c.created_at, c.id), order, query.limit)
        return Page[ChangeRead](data=items, next_cursor=cursor)

    # -- comments ----------------------------------------------------------------------
    async def add_comment(
        self, principal: Principal, ticket_id: int, data: CommentCreate
    ) -> CommentRead:
        """A reply (public) or internal note; the first public reply by an agent is the
        ticket's first response. The ticket must be one `ticket:write` reaches."""
        principal.require("ticket:write")
        shard = self._shard(ticket_id, "ticket")
        outcome = await self.shards.write(
            shard, repo.add_comment, shard, ticket_id, data, principal.user_id,
            principal.owners("ticket:write"),
        )  # fmt: skip
        return principal.redact("comment", _written(outcome, ticket_id, principal=principal))

    async def list_comments(
        self, principal: Principal, ticket_id: int, query: CommentListQuery
    ) -> Page[CommentRead]:
        """Comments of a ticket `ticket:read` reaches."""
        principal.require("ticket:read")
        order = validate_sort(query)
        position = decode_cursor(query)
        shard = self._shard(ticket_id, "ticket")
        rows = await self.shards.read(
            shard, repo.list_comments, ticket_id, query.limit, order, position,
            principal.owners("ticket:read"),
        )  # fmt: skip
        if rows is None:
            raise NotFound(f"ticket {ticket_id} not found")
        items, cursor = merge_pages([rows], lambda c: (c.created_at, c.id), order, query.limit)
        items = principal.redact_all("comment", items)
        return Page[CommentRead](data=items, next_cursor=cursor)

    # -- SLA sweep ---------------------------------------------------------------------
    async def sweep_all(self) -> SweepResult:
        """Store breach flags for every clock that ran out, on every logical shard
        (one write per shard, so frozen or moving shards are respected). Idempotent.
        The replica's periodic sweep; a caller's sweep is `sweep_sla`."""
        results = await asyncio.gather(
            *(
                self.shards.write(shard, repo.sweep_sla, [shard])
                for shard in range(self.shards.map.logical_shards)
            )
        )
        first = sorted(i for r in results for i in r[0])
        resolution = sorted(i for r in results for i in r[1])
        if first or resolution:
            log.info("SLA sweep flagged %d first-response, %d resolution breaches",
                     len(first), len(resolution))  # fmt: skip
        return SweepResult(first_response_breached=first, resolution_breached=resolution)

    async def sweep_sla(self, principal: Principal) -> SweepResult:
        """Store SLA breach flags now, for a caller holding `sla:write` (the route, or a
        handle's `sweep_sla.remote(principal)`); the periodic sweep does the same."""
        principal.require("sla:write")
        return await self.sweep_all()

    # -- queues ------------------------------------------------------------------------
    async def create_queue(self, principal: Principal, data: QueueCreate) -> QueueRead:
        principal.require("queue:write")
        return await self.config.write(config_repo.create_queue, data, principal.user_id)

    async def get_queue(self, principal: Principal, queue_id: int) -> QueueRead:
        principal.require("queue:read")
        found = await self.config.read(config_repo.get_queue, queue_id)
        if found is None:
            raise NotFound(f"queue {queue_id} not found")
        return found

    async def list_queues(self, principal: Principal, query: QueueListQuery) -> Page[QueueRead]:
        principal.require("queue:read")
        if query.count:
            raise Validation(
                "count is not offered on queues", [{"field": "count", "message": "not supported"}]
            )
        order = validate_sort(query)
        position = decode_cursor(query)
        rows = await self.config.read(config_repo.list_queues, query.limit, order, position)
        items, cursor = merge_pages(
            [rows], lambda q: (getattr(q, order.field), q.id), order, query.limit
        )
        return Page[QueueRead](data=items, next_cursor=cursor)

    async def update_queue(
        self,
        principal: Principal,
        queue_id: int,
        data: QueueUpdate,
        if_version: int | None = None,
    ) -> QueueRead:
        principal.require("queue:write")
        changes = data.model_dump(exclude_unset=True)
        outcome = await self.config.write(
            config_repo.update_queue, queue_id, changes, if_version, principal.user_id
        )
        return _written(outcome, queue_id, "queue")

    async def delete_queue(
        self, principal: Principal, queue_id: int, if_version: int | None = None
    ) -> QueueRead:
        """Soft delete; tickets keep their queue id, new tickets can no longer use it."""
        principal.require("queue:write")
        outcome = await self.config.write(
            config_repo.delete_queue, queue_id, if_version, principal.user_id
        )
        return _written(outcome, queue_id, "queue")

    async def restore_queue(self, principal: Principal, queue_id: int) -> QueueRead:
        principal.require("queue:write")
        restored = await self.config.write(config_repo.restore_queue, queue_id, principal.user_id)
        if restored is None:
            raise NotFound(f"queue {queue_id} not found")
        return restored

    async def put_member(
        self, principal: Principal, queue_id: int, user_id: int, data: QueueMemberPut
    ) -> QueueRead:
        principal.require("queue:write")
        queue = await self.config.write(
            config_repo.put_member, queue_id, user_id, data.active, principal.user_id
        )
        if queue is None:
            raise NotFound(f"queue {queue_id} not found")
        return queue

    async def remove_member(self, principal: Principal, queue_id: int, user_id: int) -> QueueRead:
        principal.require("queue:write")
        queue, removed = await self.config.write(
            config_repo.remove_member, queue_id, user_id, principal.user_id
        )
        if queue is None:
            raise NotFound(f"queue {queue_id} not found")
        if not removed:
            raise NotFound(f"user {user_id} is not a member of queue {queue_id}")
        return queue

    async def queue_history(
        self, principal: Principal, queue_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of a live queue's name and strategy, and of its members."""
        await self.get_queue(principal, queue_id)
        return await self._config_history("queue", queue_id, query)

    async def _config_history(
        self, record_type: str, record_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        order = validate_sort(query)
        rows = await self.config.read(
            list_changes, record_type, record_id, query.limit, order, decode_cursor(query)
        )
        items, cursor = merge_pages([rows], lambda c: (c.created_at, c.id), order, query.limit)
        return Page[ChangeRead](data=items, next_cursor=cursor)

    # -- SLA policies ------------------------------------------------------------------
    async def list_sla_policies(self, principal: Principal) -> Page[SlaPolicyRead]:
        principal.require("sla:read")
        return Page[SlaPolicyRead](data=await self.config.read(config_repo.list_policies))

    async def put_sla_policy(
        self,
        principal: Principal,
        priority: str,
        data: SlaPolicyPut,
        if_version: int | None = None,
    ) -> SlaPolicyRead:
        """Set a priority's targets; they apply to tickets created (or re-prioritised)
        from now on."""
        principal.require("sla:write")
        _check_priority(priority)
        outcome = await self.config.write(
            config_repo.put_policy, priority, data, if_version, principal.user_id
        )
        if isinstance(outcome, Stale):
            raise PreconditionFailed(
                f"the {priority} policy is at version {outcome.current_version}; reload and retry"
            )
        return outcome

    async def sla_policy_history(
        self, principal: Principal, priority: str, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of a priority's targets (record type `sla_policy`, record id the
        policy's stable `id`)."""
        principal.require("sla:read")
        _check_priority(priority)
        found = await self.config.read(config_repo.policy_id, priority)
        if found is None:
            raise NotFound(f"no SLA policy for priority {priority}")
        return await self._config_history("sla_policy", found, query)


def _check_priority(priority: str) -> None:
    if priority not in rules.PRIORITIES:
        raise Validation(
            f"unknown priority {priority!r}",
            [{"field": "priority", "message": "one of: " + ", ".join(rules.PRIORITIES)}],
        )


async def _one(call: Any) -> list[Any]:
    return [await call]


def _ticket_key(field: str) -> Callable[[TicketRead], tuple[Any, int]]:
    if field == "priority":
        return lambda t: (rules.PRIORITY_RANK[t.priority], t.id)
    return lambda t: (getattr(t, field), t.id)


def _refused(outcome: Any) -> AppError | None:
    """A batch item's change the ticket rules refused: its 409 (as `_written`)."""
    return Conflict(outcome.reason) if isinstance(outcome, repo.Refused) else None


def _written(
    outcome: T | Stale | Denied | repo.Refused | None,
    record_id: int,
    kind: str = "ticket",
    principal: Principal | None = None,
) -> T:
    """The record a guarded write returned, or the error its absence means (a
    transition the rules refused is a 409; a ticket outside the caller's scope a 403
    when they may read it, else a 404)."""
    if isinstance(outcome, repo.Refused):
        raise Conflict(outcome.reason)
    return written(outcome, kind, record_id, principal)
