"""Pipelines and deals: permissions, checks against other services, routing deals to
their customer's shard, merging pages. No SQL here (repo.py), no Ray or FastAPI
(deployment.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from deployments._kit.batch import BatchDelete, Plan
from deployments._kit.batch import run as run_batch
from deployments._kit.custom_fields import Definitions, ObjectFields, ObjectSchema
from deployments._kit.history import ChangeRead, HistoryQuery, list_changes
from deployments._kit.once import write_once
from deployments._kit.sql import Denied, Stale, written
from deployments._kit.timeline import TimelineItem, Window
from deployments._kit.unique_values import Records
from deployments.product.schemas import Quote
from deployments.sales import repo, rules
from deployments.sales.repo import Refused
from deployments.sales.schemas import (
    DealBatch,
    DealBatchCreate,
    DealBatchResult,
    DealBatchUpdate,
    DealCreate,
    DealListQuery,
    DealOrderCreate,
    DealRead,
    DealUpdate,
    LostRequest,
    OrderCreate,
    OrderLineInput,
    OrderListQuery,
    OrderRead,
    OrderUpdate,
    PipelineCreate,
    PipelineListQuery,
    PipelineMove,
    PipelineRead,
    PipelineUpdate,
    StageChangeRead,
    StageCreate,
    StageHistoryQuery,
    StageMove,
    StageUpdate,
    WonRequest,
)
from deployments.sales.totals import order_totals
from gateway.errors import (
    AppError,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Validation,
)
from gateway.idempotency import Once
from gateway.listing import Page, decode_cursor, merge_pages, validate_sort
from gateway.principal import Principal
from shards import ShardNotFound
from shards.client import Database, Shards

T = TypeVar("T")
_STALE_RETRIES = 3


class ProductCatalog(Protocol):
    """What sales asks the Product service: live prices of products in a price book
    (422 naming `product_id` for a product without an active price there)."""

    async def quote(self, principal: Principal, book_id: int, product_ids: list[int]) -> Quote: ...


class CustomerDirectory(Protocol):
    """What sales asks the Customer service (through its deployment handle)."""

    async def customer_exists(self, principal: Principal, customer_id: int) -> bool: ...

    async def contact_customer(self, principal: Principal, contact_id: int) -> int | None:
        """The customer of a contact, None when the contact does not exist."""
        ...


def _invalid(field: str, message: str) -> Validation:
    return Validation(message, [{"field": field, "message": message}])


class PipelineCache:
    """Pipelines by id (and the default one), kept `ttl_s` seconds in this replica:
    every deal write needs its pipeline, pipelines change rarely. A miss or an
    unknown stage re-reads once before refusing, so a pipeline or stage just made
    elsewhere is never refused for long; edits made through this replica clear it."""

    def __init__(
        self, db: Database, ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._ttl = ttl_s
        self._clock = clock
        self._by_id: dict[int, tuple[float, PipelineRead | None]] = {}
        self._default: tuple[float, PipelineRead | None] | None = None

    def clear(self) -> None:
        self._by_id.clear()
        self._default = None

    async def get(self, pipeline_id: int, fresh: bool = False) -> PipelineRead | None:
        now = self._clock()
        hit = self._by_id.get(pipeline_id)
        if hit is not None and not fresh and now - hit[0] < self._ttl:
            return hit[1]
        found = await self._db.read(repo.get_pipeline, pipeline_id)
        self._by_id[pipeline_id] = (now, found)
        return found

    async def default(self) -> PipelineRead | None:
        now = self._clock()
        if self._default is not None and now - self._default[0] < self._ttl:
            return self._default[1]
        found = await self._db.read(repo.get_default_pipeline)
        self._default = (now, found)
        return found

    async def with_stage(self, pipeline_id: int, stage_id: int | None) -> PipelineRead | None:
        """The pipeline, re-read when the cached copy lacks `stage_id`."""
        found = await self.get(pipeline_id)
        if found is None or (stage_id is not None and found.stage(stage_id) is None):
            found = await self.get(pipeline_id, fresh=True)
        return found


class SalesService:
    def __init__(
        self,
        shards: Shards,
        config: Database,
        customers: CustomerDirectory,
        products: ProductCatalog,
        fields: Definitions | None = None,
    ) -> None:
        """`fields`: the custom field definitions (None: deals' kept unchecked)."""
        self.shards = shards
        self.config = config
        self.customers = customers
        self.products = products
        self.pipelines = PipelineCache(config)
        self.deal_fields = ObjectFields("deals", fields, Records(shards, "deals"))

    async def purge_custom_field(self, principal: Principal, object_name: str, key: str) -> int:
        """Remove a deleted custom field's values from every deal (the auth
        service's purge, `field:write`); how many records held one."""
        principal.require("field:write")
        return await self.deal_fields.purge(key)

    async def deal_schema(self, principal: Principal) -> ObjectSchema:
        """The deal create body as JSON Schema with the live custom fields."""
        principal.require("deal:read")
        return await self.deal_fields.schema(DealCreate)

    async def _shown(self, principal: Principal, deal: DealRead) -> DealRead:
        """What the caller sees of a deal (hidden fields null, live custom fields)."""
        return await self.deal_fields.shown(principal.redact("deal", deal))

    def _shard(self, record_id: int, kind: str) -> int:
        try:
            return self.shards.shard_for_id(record_id)
        except ShardNotFound:
            raise NotFound(f"{kind} {record_id} not found") from None

    # -- pipelines -------------------------------------------------------------------
    async def create_pipeline(self, principal: Principal, data: PipelineCreate) -> PipelineRead:
        principal.require("pipeline:write")
        created = await self.config.write(repo.create_pipeline, data, principal.user_id)
        self.pipelines.clear()
        return created

    async def get_pipeline(self, principal: Principal, pipeline_id: int) -> PipelineRead:
        principal.require("pipeline:read")
        found = await self.config.read(repo.get_pipeline, pipeline_id)
        if found is None:
            raise NotFound(f"pipeline {pipeline_id} not found")
        return found

    async def list_pipelines(
        self, principal: Principal, query: PipelineListQuery
    ) -> Page[PipelineRead]:
        principal.require("pipeline:read")
        if query.count:
            raise _invalid("count", "count is not offered on pipelines")
        order = validate_sort(query)
        rows = await self.config.read(repo.list_pipelines, query, order, decode_cursor(query))
        items, cursor = merge_pages([rows], lambda p: (p.created_at, p.id), order, query.limit)
        return Page[PipelineRead](data=items, next_cursor=cursor)

    async def update_pipeline(
        self,
        principal: Principal,
        pipeline_id: int,
        data: PipelineUpdate,
        if_version: int | None = None,
    ) -> PipelineRead:
        principal.require("pipeline:write")
        outcome = await self.config.write(
            repo.update_pipeline, pipeline_id, data.model_dump(exclude_unset=True), if_version,
            principal.user_id,
        )  # fmt: skip
        self.pipelines.clear()
        return _written(outcome, "pipeline", pipeline_id)

    async def delete_pipeline(
        self, principal: Principal, pipeline_id: int, if_version: int | None = None
    ) -> PipelineRead:
        """Soft delete. Deals already in it keep it; new deals cannot use it."""
        principal.require("pipeline:write")
        outcome = await self.config.write(
            repo.delete_pipeline, pipeline_id, if_version, principal.user_id
        )
        self.pipelines.clear()
        return _written(outcome, "pipeline", pipeline_id)

    async def restore_pipeline(self, principal: Principal, pipeline_id: int) -> PipelineRead:
        principal.require("pipeline:write")
        restored = await self.config.write(repo.restore_pipeline, pipeline_id, principal.user_id)
        self.pipelines.clear()
        if restored is None:
            raise NotFound(f"pipeline {pipeline_id} not found")
        return restored

    async def add_stage(
        self, principal: Principal, pipeline_id: int, data: StageCreate
    ) -> PipelineRead:
        principal.require("pipeline:write")
        outcome = await self.config.write(repo.add_stage, pipeline_id, data, principal.user_id)
        self.pipelines.clear()
        return _written(outcome, "pipeline", pipeline_id)

    async def update_stage(
        self,
        principal: Principal,
        pipeline_id: int,
        stage_id: int,
        data: StageUpdate,
        if_version: int | None = None,
    ) -> PipelineRead:
        """Returns the whole pipeline (positions of the other stages may change)."""
        principal.require("pipeline:write")
        outcome = await self.config.write(
            repo.update_stage, pipeline_id, stage_id, data.model_dump(exclude_unset=True),
            if_version, principal.user_id,
        )  # fmt: skip
        self.pipelines.clear()
        return _written(outcome, "stage", stage_id)

    async def pipeline_history(
        self, principal: Principal, pipeline_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of a live pipeline's name and default flag, and of its stages."""
        await self.get_pipeline(principal, pipeline_id)
        order = validate_sort(query)
        rows = await self.config.read(
            list_changes, "pipeline", pipeline_id, query.limit, order, decode_cursor(query)
        )
        items, cursor = merge_pages([rows], lambda c: (c.created_at, c.id), order, query.limit)
        return Page[ChangeRead](data=items, next_cursor=cursor)

    # -- deals -----------------------------------------------------------------------
    async def create_deal(
        self,
        principal: Principal,
        data: DealCreate,
        source_key: str | None = None,
        once: Once | None = None,
    ) -> DealRead:
        """A deal on its customer's shard. With `source_key` (e.g. the lead it was
        converted from), calling again with the same key returns the first deal. With
        `once` (the caller's `Idempotency-Key`), made once per key in the deal's own
        transaction (its customer and pipeline are checked again on a repeat)."""
        principal.require("deal:write")
        if source_key is not None and not 1 <= len(source_key) <= 200:
            raise _invalid("source_key", "1-200 characters")
        if data.owner_id is not None and data.owner_id != principal.user_id:
            principal.require("deal:assign")  # before a repeat's answer, as always
        shard = self._customer_shard(data.customer_id)
        if source_key is not None:
            # Whoever owns it: the same key always answers with the same deal.
            earlier = await self.shards.read(shard, repo.get_deal_by_source_key, source_key)
            if earlier is not None:
                return await self._shown(principal, earlier)
        values = await self._new_deal(principal, data)
        values["source_key"] = source_key
        key = once if source_key is None else f"source:{source_key}"
        async with await self.deal_fields.claim(values["custom_fields"], key=key):
            created = await write_once(
                self.shards, shard, once, DealRead, repo.create_deal, shard, values,
                principal.user_id,
            )  # fmt: skip
        return await self._shown(principal, created)

    async def _new_deal(
        self, principal: Principal, data: DealCreate, field: str = "custom_fields"
    ) -> dict[str, Any]:
        """A new deal's stored values, once every check a create makes has passed: the
        owner (`deal:assign` for another), the customer and contact, the pipeline and
        its first (or named) stage, the custom fields."""
        data = await self.deal_fields.create(data, field)
        owner_id = data.owner_id if data.owner_id is not None else principal.user_id
        if owner_id != principal.user_id:
            principal.require("deal:assign")
        self._customer_shard(data.customer_id)
        await self._check_customer(principal, data.customer_id, data.contact_id)
        if data.pipeline_id is None:
            pipeline = await self.pipelines.default()
            if pipeline is None:
                raise _invalid("pipeline_id", "there is no default pipeline; name one")
        else:
            pipeline = await self.pipelines.with_stage(data.pipeline_id, data.stage_id)
            if pipeline is None:
                raise _invalid("pipeline_id", f"pipeline {data.pipeline_id} does not exist")
        stage = rules.initial_stage(pipeline, data.stage_id)
        return {
            "customer_id": data.customer_id,
            "contact_id": data.contact_id,
            "name": data.name,
            "amount": data.amount.amount,
            "currency": data.amount.currency,
            "pipeline_id": pipeline.id,
            "stage_id": stage.id,
            "probability": stage.probability if data.probability is None else data.probability,
            "owner_id": owner_id,
            "expected_close_date": data.expected_close_date,
            "custom_fields": data.custom_fields,
            "source_key": None,
        }

    async def batch_deals(
        self, principal: Principal, body: DealBatch, key: Once | None = None
    ) -> DealBatchResult:
        """Creates, updates and deletes of deals, each checked as the single operation
        is (the customer and contact, the pipeline and stage, the owner: checked for
        every item at once, before the writes), then written in one transaction per
        logical shard (deployments/_kit/batch.py)."""
        plan = Plan(principal, "deal", DealRead, DealBatchResult, key)

        async def prepare(i: int, item: DealBatchCreate | DealBatchUpdate | BatchDelete) -> None:
            if isinstance(item, DealBatchCreate):
                principal.require("deal:write")
                shard = self._customer_shard(item.data.customer_id)
                field = f"items.{i}.data.custom_fields"
                values = await self._new_deal(principal, item.data, field)
                once = plan.item_key(i, item)
                claim = await self.deal_fields.claim(values["custom_fields"], key=once, field=field)
                plan.add(
                    i, "create", shard, repo.create_deal, shard, values, principal.user_id,
                    key=once, explain=_refused, claim=claim,
                )  # fmt: skip
                return
            shard = self._shard(item.id, "deal")
            if isinstance(item, DealBatchUpdate):
                principal.require("deal:write")
                field = f"items.{i}.data.custom_fields"
                changes = await self._deal_changes(principal, item.id, item.data, field)
                claim = await self.deal_fields.claim(
                    changes.get("custom_fields"), record=item.id, field=field
                )
                plan.change(
                    i, item, shard, repo.update_deal, "deal:write", changes, explain=_refused,
                    claim=claim,
                )  # fmt: skip
            else:
                plan.change(i, item, shard, repo.delete_deal, "deal:delete", explain=_refused)

        done = await run_batch(plan, self.shards, body.items, prepare)
        return await self.deal_fields.shown_results(done)

    def _customer_shard(self, customer_id: int) -> int:
        try:
            return self.shards.shard_for_id(customer_id)
        except ShardNotFound:
            raise _invalid("customer_id", f"customer {customer_id} does not exist") from None

    async def _check_customer(
        self, principal: Principal, customer_id: int, contact_id: int | None
    ) -> None:
        checks: list[Awaitable[Any]] = [self.customers.customer_exists(principal, customer_id)]
        if contact_id is not None:
            checks.append(self.customers.contact_customer(principal, contact_id))
        found = await asyncio.gather(*checks)
        if not found[0]:
            raise _invalid("customer_id", f"customer {customer_id} does not exist")
        if contact_id is not None and found[1] != customer_id:
            raise _invalid("contact_id", f"contact {contact_id} is not a contact of the customer")

    async def get_deal(self, principal: Principal, deal_id: int) -> DealRead:
        return await self._shown(principal, await self._deal(principal, deal_id))

    async def _deal(self, principal: Principal, deal_id: int) -> DealRead:
        """The live deal as stored (not redacted: for planning a change), when the
        caller's `deal:read` scope reaches it; 404 otherwise."""
        principal.require("deal:read")
        found = await self.shards.read(
            self._shard(deal_id, "deal"), repo.get_deal, deal_id, principal.owners("deal:read")
        )
        if found is None:
            raise NotFound(f"deal {deal_id} not found")
        return found

    async def _reached_deal(
        self, principal: Principal, deal_id: int, permission: str, doing: str
    ) -> DealRead:
        """The deal as stored when `permission`'s scope reaches it (a change checked
        before any other work): 404 when the caller may not even read it, 403 when
        they may read it but not `doing` it."""
        deal = await self._deal(principal, deal_id)
        if not principal.reaches(permission, deal.owner_id):
            raise Forbidden(f"your role may not {doing} deal {deal_id}: it is not yours")
        return deal

    async def update_deal(
        self,
        principal: Principal,
        deal_id: int,
        data: DealUpdate,
        if_version: int | None = None,
    ) -> DealRead:
        principal.require("deal:write")
        shard = self._shard(deal_id, "deal")
        changes = await self._deal_changes(principal, deal_id, data)
        async with await self.deal_fields.claim(changes.get("custom_fields"), record=deal_id):
            outcome = await self.shards.write(
                shard, repo.update_deal, deal_id, changes, if_version, principal.user_id,
                principal.owners("deal:write"),
            )  # fmt: skip
            updated = _written(outcome, "deal", deal_id, principal)
        return await self._shown(principal, updated)

    async def _deal_changes(
        self,
        principal: Principal,
        deal_id: int,
        data: DealUpdate,
        field: str = "custom_fields",
    ) -> dict[str, Any]:
        """An update's stored changes, once its checks have passed: `deal:assign` for
        another owner, a new contact one of the deal's customer's, custom fields."""
        changes = await self.deal_fields.changes(data.model_dump(exclude_unset=True), field)
        if "owner_id" in changes and changes["owner_id"] != principal.user_id:
            principal.require("deal:assign")
        if data.amount is not None:
            changes["amount"], changes["currency"] = data.amount.amount, data.amount.currency
        if changes.get("contact_id") is not None:
            current = await self._reached_deal(principal, deal_id, "deal:write", "change")
            owner = await self.customers.contact_customer(principal, changes["contact_id"])
            if owner != current.customer_id:
                raise _invalid("contact_id", "not a contact of the deal's customer")
        return changes

    async def delete_deal(
        self, principal: Principal, deal_id: int, if_version: int | None = None
    ) -> DealRead:
        principal.require("deal:delete")
        outcome = await self.shards.write(
            self._shard(deal_id, "deal"), repo.delete_deal, deal_id, if_version, principal.user_id,
            principal.owners("deal:delete"),
        )  # fmt: skip
        return await self._shown(principal, _written(outcome, "deal", deal_id, principal))

    async def restore_deal(self, principal: Principal, deal_id: int) -> DealRead:
        principal.require("deal:delete")
        shard = self._shard(deal_id, "deal")
        async with await self.deal_fields.claim_restore(deal_id):
            restored = await self.shards.write(
                shard, repo.restore_deal, deal_id, principal.user_id,
                principal.owners("deal:delete"),
            )  # fmt: skip
            if restored is None:
                raise NotFound(f"deal {deal_id} not found")
        return await self._shown(principal, restored)

    async def list_deals(self, principal: Principal, query: DealListQuery) -> Page[DealRead]:
        """Deals across every shard in one global order (one shard with `customer_id`),
        of the owners the caller's `deal:read` scope reaches."""
        principal.require("deal:read")
        order = validate_sort(query)
        sort = await self.deal_fields.sort(order)
        position = decode_cursor(query)
        position = sort.position(position) if sort else position
        owners = principal.owners("deal:read")
        custom = await self.deal_fields.filters(query.custom)
        if query.customer_id is not None:
            try:
                shard = self.shards.shard_for_id(query.customer_id)
            except ShardNotFound:  # an id no customer has: nothing matches the filter
                return Page[DealRead](data=[], total=0 if query.count else None)
            runs = [
                await self.shards.read(
                    shard, repo.list_deals, [shard], query, order, position, owners, custom, sort
                )
            ]
            total = (
                await self.shards.read(shard, repo.count_deals, [shard], query, owners, custom)
                if query.count
                else None
            )
        elif query.count:
            runs, counts = await asyncio.gather(
                self.shards.gather(repo.list_deals, query, order, position, owners, custom, sort),
                self.shards.gather(repo.count_deals, query, owners, custom),
            )
            total = sum(counts)
        else:
            runs = await self.shards.gather(
                repo.list_deals, query, order, position, owners, custom, sort
            )
            total = None
        key = sort.row_key if sort else repo.deal_sort_key(order.field)
        items, cursor = merge_pages(runs, key, order, query.limit)
        items = await self.deal_fields.shown_all(principal.redact_all("deal", items))
        return Page[DealRead](data=items, next_cursor=cursor, total=total)

    async def list_customer_deals(
        self, principal: Principal, customer_id: int, query: DealListQuery
    ) -> Page[DealRead]:
        """One customer's deals that the caller's `deal:read` scope reaches: one shard,
        since deals live with their customer (404 when the customer is not readable)."""
        principal.require("deal:read")
        try:
            self.shards.shard_for_id(customer_id)
        except ShardNotFound:
            raise NotFound(f"customer {customer_id} not found") from None
        if not await self.customers.customer_exists(principal, customer_id):
            raise NotFound(f"customer {customer_id} not found")
        return await self.list_deals(
            principal, query.model_copy(update={"customer_id": customer_id})
        )

    async def timeline(
        self, principal: Principal, customer_id: int, window: Window
    ) -> list[TimelineItem]:
        """Sales' part of a customer's timeline (deals, stage moves, orders the caller
        may read); the customer service checks the customer and merges the parts."""
        deals, orders = principal.can("deal:read"), principal.can("order:read")
        if not (deals or orders):
            return []
        return await self.shards.read(
            self._shard(customer_id, "customer"), repo.timeline, customer_id, window,
            principal.owners("deal:read"), principal.owners("order:read"), deals, orders,
        )  # fmt: skip

    async def deal_history(
        self, principal: Principal, deal_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of a deal the caller's `deal:read` scope reaches (404 otherwise)."""
        principal.require("deal:read")
        order = validate_sort(query)
        shard = self._shard(deal_id, "deal")
        await self._deal(principal, deal_id)
        rows = await self.shards.read(
            shard, list_changes, "deal", deal_id, query.limit, order, decode_cursor(query)
        )
        items, cursor = merge_pages([rows], lambda c: (c.created_at, c.id), order, query.limit)
        return Page[ChangeRead](data=items, next_cursor=cursor)

    async def stage_history(
        self, principal: Principal, deal_id: int, query: StageHistoryQuery
    ) -> Page[StageChangeRead]:
        """Stage transitions of a deal the caller's `deal:read` scope reaches (404
        otherwise)."""
        principal.require("deal:read")
        order = validate_sort(query)
        rows = await self.shards.read(
            self._shard(deal_id, "deal"), repo.list_stage_changes, deal_id, query.limit, order,
            decode_cursor(query), principal.owners("deal:read"),
        )  # fmt: skip
        if rows is None:
            raise NotFound(f"deal {deal_id} not found")
        items, cursor = merge_pages([rows], lambda c: (c.changed_at, c.id), order, query.limit)
        return Page[StageChangeRead](data=items, next_cursor=cursor)

    # -- stage transitions -------------------------------------------------------------
    async def move_stage(
        self, principal: Principal, deal_id: int, data: StageMove, if_version: int | None = None
    ) -> DealRead:
        async def plan(deal: DealRead) -> rules.Transition:
            pipeline = await self._pipeline_of(deal.pipeline_id, data.stage_id)
            return rules.move(deal, pipeline, data.stage_id, data.probability)

        return await self._transition(principal, deal_id, "stage_changed", plan, if_version)

    async def move_pipeline(
        self, principal: Principal, deal_id: int, data: PipelineMove, if_version: int | None = None
    ) -> DealRead:
        async def plan(deal: DealRead) -> rules.Transition:
            pipeline = await self.pipelines.with_stage(data.pipeline_id, data.stage_id)
            if pipeline is None:
                raise _invalid("pipeline_id", f"pipeline {data.pipeline_id} does not exist")
            return rules.move(deal, pipeline, data.stage_id, data.probability)

        return await self._transition(principal, deal_id, "moved", plan, if_version)

    async def win(
        self, principal: Principal, deal_id: int, data: WonRequest, if_version: int | None = None
    ) -> DealRead:
        async def plan(deal: DealRead) -> rules.Transition:
            return rules.won(deal, await self._pipeline_of(deal.pipeline_id), data.reason)

        return await self._transition(principal, deal_id, "won", plan, if_version)

    async def lose(
        self, principal: Principal, deal_id: int, data: LostRequest, if_version: int | None = None
    ) -> DealRead:
        async def plan(deal: DealRead) -> rules.Transition:
            return rules.lost(deal, await self._pipeline_of(deal.pipeline_id), data.reason)

        return await self._transition(principal, deal_id, "lost", plan, if_version)

    async def reopen(
        self, principal: Principal, deal_id: int, if_version: int | None = None
    ) -> DealRead:
        shard = self._shard(deal_id, "deal")

        async def plan(deal: DealRead) -> rules.Transition:
            pipeline = await self._pipeline_of(deal.pipeline_id)
            previous = await self.shards.read(shard, repo.previous_stage, deal_id)
            return rules.reopen(deal, pipeline, previous)

        return await self._transition(principal, deal_id, "reopened", plan, if_version)

    async def _pipeline_of(self, pipeline_id: int, stage_id: int | None = None) -> PipelineRead:
        """A deal's own pipeline, even when soft-deleted since (its deals keep it)."""
        pipeline = await self.pipelines.with_stage(pipeline_id, stage_id)
        if pipeline is None:
            pipeline = await self.config.read(repo.get_pipeline_any, pipeline_id)
        if pipeline is None:
            raise Conflict(f"the deal's pipeline {pipeline_id} no longer exists")
        return pipeline

    async def _transition(
        self,
        principal: Principal,
        deal_id: int,
        action: str,
        plan: Callable[[DealRead], Awaitable[rules.Transition]],
        if_version: int | None,
    ) -> DealRead:
        """Read the deal, plan the change with the rules, write it if the deal is still
        at the version read (retried a few times without `If-Match`). The caller's
        `deal:write` scope must reach the deal (checked before the rules, and again
        under the row lock): 403 when they may read it, else 404."""
        principal.require("deal:write")
        shard = self._shard(deal_id, "deal")
        for _ in range(_STALE_RETRIES):
            deal = await self._reached_deal(principal, deal_id, "deal:write", "change")
            if if_version is not None and deal.version != if_version:
                raise _stale("deal", deal_id, deal.version)
            to = await plan(deal)
            if (to.pipeline_id, to.stage_id, to.probability, to.status, to.close_reason) == (
                deal.pipeline_id, deal.stage_id, deal.probability, deal.status, deal.close_reason,
            ):  # fmt: skip
                return await self._shown(principal, deal)  # already there: nothing to write
            outcome = await self.shards.write(
                shard, repo.transition_deal, deal_id, to, action, deal.version, principal.user_id,
                principal.owners("deal:write"),
            )  # fmt: skip
            if not isinstance(outcome, Stale):
                return await self._shown(principal, written(outcome, "deal", deal_id, principal))
            if if_version is not None:
                raise _stale("deal", deal_id, outcome.current_version)
        raise Conflict(f"deal {deal_id} is being changed concurrently; retry")

    # -- orders ----------------------------------------------------------------------
    async def _price(
        self, principal: Principal, book_id: int, lines: list[OrderLineInput]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The order's currency and totals, and its lines priced from the price book
        (sku, name, price and default tax snapshotted now)."""
        if any(line.unit_price is not None for line in lines):
            principal.require("product:write")  # an explicit price: people who set prices
        quote = await self.products.quote(principal, book_id, [x.product_id for x in lines])
        by_id = {q.product_id: q for q in quote.lines}
        inputs = []
        for line in lines:
            q = by_id[line.product_id]
            price = q.unit_price if line.unit_price is None else line.unit_price
            tax = q.tax_percent if line.tax_percent is None else line.tax_percent
            inputs.append((price, line.quantity, line.discount_percent, tax))
        totals = order_totals(inputs)
        priced = [
            {
                "position": i,
                "product_id": line.product_id,
                "sku": by_id[line.product_id].sku,
                "name": by_id[line.product_id].name,
                "unit_price": price,
                "quantity": quantity,
                "discount_percent": discount,
                "tax_percent": tax,
                "subtotal": t.subtotal,
                "discount": t.discount,
                "tax": t.tax,
                "total": t.total,
            }
            for i, (line, (price, quantity, discount, tax), t) in enumerate(
                zip(lines, inputs, totals.lines, strict=True), start=1
            )
        ]
        header = {
            "price_book_id": book_id,
            "currency": quote.currency,
            "subtotal": totals.subtotal,
            "discount_total": totals.discount_total,
            "tax_total": totals.tax_total,
            "total": totals.total,
        }
        return header, priced

    async def create_order(
        self, principal: Principal, data: OrderCreate, deal_id: int | None = None
    ) -> OrderRead:
        """A draft order on its customer's shard, priced from the price book, owned by
        the caller. From a deal (`create_deal_order`), the caller's `order:write`
        scope must reach the deal."""
        principal.require("order:write")
        shard = self._customer_shard(data.customer_id)
        if deal_id is None and not await self.customers.customer_exists(
            principal, data.customer_id
        ):
            raise _invalid("customer_id", f"customer {data.customer_id} does not exist")
        header, lines = await self._price(principal, data.price_book_id, data.lines)
        header.update(
            customer_id=data.customer_id,
            deal_id=deal_id,
            notes=data.notes,
            owner_id=principal.user_id,
        )
        created = await self.shards.write(
            shard, repo.create_order, shard, header, lines, principal.user_id,
            None if deal_id is None else principal.owners("order:write"),
        )  # fmt: skip
        if isinstance(created, Refused):
            raise Conflict(created.reason, [{"field": created.field, "message": created.reason}])
        if isinstance(created, Denied):  # the deal changed hands since it was checked
            assert deal_id is not None
            if principal.reaches("deal:read", created.owner_id):
                raise Forbidden(f"your role may not order deal {deal_id}: it is not yours")
            raise NotFound(f"deal {deal_id} not found")
        return principal.redact("order", created)

    async def create_deal_order(
        self, principal: Principal, deal_id: int, data: DealOrderCreate
    ) -> OrderRead:
        """An order from a won deal, for the deal's customer (409 unless won; one live
        order per deal). The caller's `order:write` scope must reach the deal: 403
        when they may read it, 404 when not even that."""
        principal.require("order:write")
        deal = await self._reached_deal(principal, deal_id, "order:write", "order")
        if deal.status != "won":
            raise Conflict(
                f"deal {deal_id} is {deal.status}; only a won deal can be ordered",
                [{"field": "status", "message": "the deal is not won"}],
            )
        order = OrderCreate(customer_id=deal.customer_id, **data.model_dump(exclude_unset=True))
        return await self.create_order(principal, order, deal_id=deal_id)

    async def get_order(self, principal: Principal, order_id: int) -> OrderRead:
        return principal.redact("order", await self._order(principal, order_id))

    async def _order(self, principal: Principal, order_id: int) -> OrderRead:
        """The live order as stored (not redacted), when the caller's `order:read`
        scope reaches it; 404 otherwise."""
        principal.require("order:read")
        found = await self.shards.read(
            self._shard(order_id, "order"), repo.get_order, order_id,
            principal.owners("order:read"),
        )  # fmt: skip
        if found is None:
            raise NotFound(f"order {order_id} not found")
        return found

    async def _reached_order(self, principal: Principal, order_id: int) -> OrderRead:
        """The order as stored when the caller's `order:write` scope reaches it: 404
        when they may not even read it, 403 when they may read it only."""
        order = await self._order(principal, order_id)
        if not principal.reaches("order:write", order.owner_id):
            raise Forbidden(f"your role may not change order {order_id}: it is not yours")
        return order

    async def update_order(
        self,
        principal: Principal,
        order_id: int,
        data: OrderUpdate,
        if_version: int | None = None,
    ) -> OrderRead:
        """Drafts only (409 otherwise); new `lines` are re-priced, totals recomputed.
        The caller's `order:write` scope must reach the order (403 when they may read
        it, else 404)."""
        principal.require("order:write")
        shard = self._shard(order_id, "order")
        header: dict[str, Any] = {}
        lines = None
        if data.lines is not None:
            # Checked before pricing: a caller refused the order learns nothing more.
            current = await self._reached_order(principal, order_id)
            book_id = current.price_book_id if data.price_book_id is None else data.price_book_id
            header, lines = await self._price(principal, book_id, data.lines)
        if "notes" in data.model_fields_set:
            header["notes"] = data.notes
        outcome = await self.shards.write(
            shard, repo.update_order, order_id, header, lines, if_version, principal.user_id,
            principal.owners("order:write"),
        )  # fmt: skip
        return principal.redact("order", _written(outcome, "order", order_id, principal))

    async def set_order_status(
        self, principal: Principal, order_id: int, status: str, if_version: int | None = None
    ) -> OrderRead:
        """`confirmed` (from draft; then immutable) or `cancelled` (draft or confirmed);
        the caller's `order:write` scope must reach the order."""
        principal.require("order:write")
        outcome = await self.shards.write(
            self._shard(order_id, "order"), repo.set_order_status, order_id, status, if_version,
            principal.user_id, principal.owners("order:write"),
        )  # fmt: skip
        return principal.redact("order", _written(outcome, "order", order_id, principal))

    async def confirm_order(
        self, principal: Principal, order_id: int, if_version: int | None = None
    ) -> OrderRead:
        """Draft -> confirmed (then immutable)."""
        return await self.set_order_status(principal, order_id, "confirmed", if_version)

    async def cancel_order(
        self, principal: Principal, order_id: int, if_version: int | None = None
    ) -> OrderRead:
        """Draft or confirmed -> cancelled."""
        return await self.set_order_status(principal, order_id, "cancelled", if_version)

    async def delete_order(
        self, principal: Principal, order_id: int, if_version: int | None = None
    ) -> OrderRead:
        principal.require("order:delete")
        outcome = await self.shards.write(
            self._shard(order_id, "order"), repo.delete_order, order_id, if_version,
            principal.user_id, principal.owners("order:delete"),
        )  # fmt: skip
        return principal.redact("order", _written(outcome, "order", order_id, principal))

    async def restore_order(self, principal: Principal, order_id: int) -> OrderRead:
        principal.require("order:delete")
        restored = await self.shards.write(
            self._shard(order_id, "order"), repo.restore_order, order_id, principal.user_id,
            principal.owners("order:delete"),
        )  # fmt: skip
        if restored is None:
            raise NotFound(f"order {order_id} not found")
        return principal.redact("order", restored)

    async def list_orders(self, principal: Principal, query: OrderListQuery) -> Page[OrderRead]:
        """Orders across every shard in one global order (one shard with `customer_id`),
        of the owners the caller's `order:read` scope reaches."""
        principal.require("order:read")
        order = validate_sort(query)
        position = decode_cursor(query)
        owners = principal.owners("order:read")
        total: int | None = None
        if query.customer_id is not None:
            try:
                shard = self.shards.shard_for_id(query.customer_id)
            except ShardNotFound:  # an id no customer has: nothing matches the filter
                return Page[OrderRead](data=[], total=0 if query.count else None)
            runs = [
                await self.shards.read(
                    shard, repo.list_orders, [shard], query, order, position, owners
                )
            ]
            if query.count:
                total = await self.shards.read(shard, repo.count_orders, [shard], query, owners)
        elif query.count:
            runs, counts = await asyncio.gather(
                self.shards.gather(repo.list_orders, query, order, position, owners),
                self.shards.gather(repo.count_orders, query, owners),
            )
            total = sum(counts)
        else:
            runs = await self.shards.gather(repo.list_orders, query, order, position, owners)
        items, cursor = merge_pages(runs, repo.order_sort_key(order.field), order, query.limit)
        items = principal.redact_all("order", items)
        return Page[OrderRead](data=items, next_cursor=cursor, total=total)

    async def list_customer_orders(
        self, principal: Principal, customer_id: int, query: OrderListQuery
    ) -> Page[OrderRead]:
        """One customer's orders that the caller's `order:read` scope reaches (404 when
        the customer is not readable)."""
        principal.require("order:read")
        try:
            self.shards.shard_for_id(customer_id)
        except ShardNotFound:
            raise NotFound(f"customer {customer_id} not found") from None
        if not await self.customers.customer_exists(principal, customer_id):
            raise NotFound(f"customer {customer_id} not found")
        return await self.list_orders(
            principal, query.model_copy(update={"customer_id": customer_id})
        )

    async def order_history(
        self, principal: Principal, order_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of an order the caller's `order:read` scope reaches (404 otherwise)."""
        order = validate_sort(query)
        shard = self._shard(order_id, "order")
        await self._order(principal, order_id)
        rows = await self.shards.read(
            shard, list_changes, "order", order_id, query.limit, order, decode_cursor(query)
        )
        items, cursor = merge_pages([rows], lambda c: (c.created_at, c.id), order, query.limit)
        return Page[ChangeRead](data=items, next_cursor=cursor)


def _stale(kind: str, record_id: int, version: int) -> PreconditionFailed:
    return PreconditionFailed(f"{kind} {record_id} is at version {version}; reload and retry")


def _conflict(refused: Refused) -> Conflict:
    """A transition the deal rules refused: a 409 naming the field."""
    return Conflict(refused.reason, [{"field": refused.field, "message": refused.reason}])


def _refused(outcome: Any) -> AppError | None:
    """A batch item's answer that the deal rules refused it (as `_written`)."""
    return _conflict(outcome) if isinstance(outcome, Refused) else None


def _written(
    outcome: T | Stale | Refused | Denied | None,
    kind: str,
    record_id: int,
    principal: Principal | None = None,
) -> T:
    """The record a guarded write returned, or the error its absence means (a
    transition the rules refused is a 409; a record outside the caller's scope a 403
    when they may read it, else a 404)."""
    if isinstance(outcome, Refused):
        raise _conflict(outcome)
    return written(outcome, kind, record_id, principal)
