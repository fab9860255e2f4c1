"""Customer and contact logic: permissions, routing to shards, merging pages.
No SQL here (that is repo.py) and no Ray or FastAPI (that is app.py and routes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit import bulk
from deployments._kit.batch import BatchDelete, Plan
from deployments._kit.batch import run as run_batch
from deployments._kit.custom_fields import Definitions, ObjectFields, ObjectSchema
from deployments._kit.history import ChangeRead, HistoryQuery, list_changes, redact_changes
from deployments._kit.once import kept, write_once
from deployments._kit.sql import written
from deployments._kit.unique_values import Records
from deployments.customer import repo
from deployments.customer.activities.service import Activities
from deployments.customer.duplicates.schemas import DuplicateMode
from deployments.customer.duplicates.service import Duplicates
from deployments.customer.schemas import (
    ContactBatch,
    ContactBatchCreate,
    ContactBatchResult,
    ContactBatchUpdate,
    ContactCreate,
    ContactRead,
    ContactUpdate,
    CustomerBatch,
    CustomerBatchCreate,
    CustomerBatchResult,
    CustomerBatchUpdate,
    CustomerCreate,
    CustomerListQuery,
    CustomerRead,
    CustomerUpdate,
)
from gateway.errors import AppError, Forbidden, NotFound, Validation
from gateway.idempotency import Once
from gateway.listing import (
    ListQuery,
    Page,
    decode_cursor,
    merge_pages,
    row_key,
    validate_sort,
)
from gateway.principal import Principal
from shards.client import Database, Shards

Ids = list[int]  # (`list` is a method's name inside the class)
T = TypeVar("T")


class CustomerService(Activities, Duplicates):
    """Customers, their contacts and activities (deployments/customer/activities/), and
    their likely duplicates (deployments/customer/duplicates/)."""

    def __init__(
        self,
        shards: Shards,
        peers: dict[str, Any] | None = None,
        fields: Definitions | None = None,
        redis: aioredis.Redis | None = None,
        jobs: Database | None = None,
    ) -> None:
        """`peers`: deployment handles on the sales, support, marketing and file
        applications (activities check the deals, tickets and leads they name; a
        timeline asks each for its part). `fields`: the custom field definitions
        (None: custom fields are kept as given, unchecked). `redis`: where records
        wait for their duplicate keys; `jobs`: the integration database, whose running
        imports they wait for (None: never waits)."""
        self.shards = shards
        self.peers = peers or {}
        self.redis = redis if redis is not None else redis_client.connect(
            get_settings().redis_url, socket_timeout=5
        )
        self.jobs = jobs
        self.custom = ObjectFields("customers", fields, Records(shards, "customers"))
        self.contact_fields = ObjectFields("contacts", fields, Records(shards, "contacts"))

    async def bulk_writes_running(self) -> bool:
        """Whether a customers' import runs (the duplicate keys of its rows wait)."""
        if self.jobs is None:
            return False
        return await self.jobs.read_primary(
            bulk.bulk_writes_running, bulk.BULK_WRITE_KINDS, bulk.BULK_WRITE_ALIVE_S
        )

    async def purge_custom_field(self, principal: Principal, object_name: str, key: str) -> int:
        """Remove a deleted custom field's values from every customer or contact (the auth
        service's purge, `field:write`); how many records held one."""
        principal.require("field:write")
        fields = {"customers": self.custom, "contacts": self.contact_fields}[object_name]
        return await fields.purge(key)

    async def schema(self, principal: Principal) -> ObjectSchema:
        """The customer create body as JSON Schema with the live custom fields."""
        principal.require("customer:read")
        return await self.custom.schema(CustomerCreate)

    async def contact_schema(self, principal: Principal) -> ObjectSchema:
        """The contact create body as JSON Schema with the live custom fields."""
        principal.require("contact:read")
        return await self.contact_fields.schema(ContactCreate)

    async def _contact(self, principal: Principal, contact: ContactRead) -> ContactRead:
        return await self.contact_fields.shown(principal.redact("contact", contact))

    async def _shown(self, principal: Principal, customer: CustomerRead) -> CustomerRead:
        """What the caller sees of a customer: fields their role hides as null, the
        values of deleted custom fields left out."""
        return await self.custom.shown(principal.redact("customer", customer))

    # -- customers -----------------------------------------------------------------
    async def create(
        self, principal: Principal, data: CustomerCreate, once: Once | None = None
    ) -> CustomerRead:
        """A new customer on a logical shard its id carries. With `once` (the caller's
        `Idempotency-Key`), placed by the key and made once for it: a repeat answers
        with the first customer (`deployments/_kit/once.py`)."""
        principal.require("customer:write")
        owner_id = data.owner_id if data.owner_id is not None else principal.user_id
        if owner_id != principal.user_id:
            principal.require("customer:assign")
        data = await self.custom.create(data)
        shard = self.shards.place(key=once.slot if once is not None else None)
        async with await self.custom.claim(data.custom_fields, key=once):
            created = await write_once(
                self.shards, shard, once, CustomerRead,
                repo.create_customer, shard, data, owner_id, principal.user_id,
            )  # fmt: skip
        return await self._shown(principal, created)

    async def create_checked(
        self,
        principal: Principal,
        data: CustomerCreate,
        once: Once | None = None,
        duplicates: DuplicateMode = "warn",
    ) -> tuple[CustomerRead, Ids]:
        """`create`, and the ids of the customers it likely duplicates (same normalised
        e-mail, phone or name; deployments/customer/duplicates/): `warn` looks them up
        while the customer is written, `reject` refuses with 409 before anything is
        written, `ignore` does not look."""
        if duplicates == "ignore":
            return await self.create(principal, data, once), []
        probe = data.model_dump()
        if duplicates == "reject":
            # A repeat of a create that was made answers with it, not a 409 naming it.
            await self.refuse_duplicates(principal, "customer", probe, self._kept(once))
            return await self.create(principal, data, once), []
        lookup = self._looking_up("customer", principal, probe)
        created = await _unless_failed(self.create(principal, data, once), lookup)
        return created, [i for i in await lookup if i != created.id]

    def _looking_up(
        self, kind: str, principal: Principal, probe: dict[str, Any]
    ) -> asyncio.Task[Ids]:
        """The lookup of a new record's likely duplicates, started beside its write. It
        runs as a task of its own and only reads; the write stays in the request's own
        task, whose context carries what the write records (its read-your-writes
        position, its trace)."""
        return asyncio.ensure_future(self.duplicates_of_new(principal, kind, probe))

    def _kept(
        self, once: Once | None, shard: int | None = None
    ) -> Callable[[], Awaitable[bool]] | None:
        """Whether the create keyed by `once` was made (on `shard`, else where its key
        places it): asked of the primary."""
        if once is None:
            return None
        where = shard if shard is not None else self.shards.place(key=once.slot)
        return lambda: self.shards.write(where, kept, once)

    async def batch(
        self, principal: Principal, body: CustomerBatch, key: Once | None = None
    ) -> CustomerBatchResult:
        """Creates, updates and deletes of customers, each checked and answered as the
        single operation would be, written in one transaction per logical shard
        (deployments/_kit/batch.py); with `key` (the `Idempotency-Key`), each item once."""
        plan = Plan(principal, "customer", CustomerRead, CustomerBatchResult, key)

        async def prepare(
            i: int, item: CustomerBatchCreate | CustomerBatchUpdate | BatchDelete
        ) -> None:
            if isinstance(item, CustomerBatchCreate):
                principal.require("customer:write")
                owner_id = item.data.owner_id
                owner_id = owner_id if owner_id is not None else principal.user_id
                if owner_id != principal.user_id:
                    principal.require("customer:assign")
                field = f"items.{i}.data.custom_fields"
                data = await self.custom.create(item.data, field)
                once = plan.item_key(i, item)
                shard = self.shards.place(key=once.slot if once is not None else None)
                claim = await self.custom.claim(data.custom_fields, key=once, field=field)
                plan.add(
                    i, "create", shard, repo.create_customer, shard, data, owner_id,
                    principal.user_id, key=once, claim=claim,
                )  # fmt: skip
                return
            shard = self._shard(item.id, "customer")
            if isinstance(item, CustomerBatchUpdate):
                changes = item.data.model_dump(exclude_unset=True)
                if "owner_id" in changes and changes["owner_id"] != principal.user_id:
                    principal.require("customer:assign")
                field = f"items.{i}.data.custom_fields"
                changes = await self.custom.changes(changes, field)
                claim = await self.custom.claim(
                    changes.get("custom_fields"), record=item.id, field=field
                )
                plan.change(
                    i, item, shard, repo.update_customer, "customer:write", changes, claim=claim
                )
            else:
                plan.change(i, item, shard, repo.delete_customer, "customer:delete")

        return await self.custom.shown_results(
            await run_batch(plan, self.shards, body.items, prepare)
        )

    async def create_from_source(
        self,
        principal: Principal,
        source_key: str,
        data: CustomerCreate,
        near: int | None = None,
    ) -> CustomerRead:
        """Idempotent create for another service's operation (a lead conversion): the
        customer is placed on the logical shard of the record `near` names (the lead:
        its activities live there), else by a stable hash of `source_key`; the key's
        unique index makes a repeat return the customer the first call made (the
        caller repeats with the same `near`)."""
        principal.require("customer:write")
        owner_id = data.owner_id if data.owner_id is not None else principal.user_id
        if owner_id != principal.user_id:
            principal.require("customer:assign")
        shard = self.shards.place(key=source_key) if near is None else self._shard(near, "record")
        data = await self.custom.create(data)
        async with await self.custom.claim(data.custom_fields, key=f"source:{source_key}"):
            created = await self.shards.write(
                shard, repo.create_customer_from_source, shard, source_key, data, owner_id,
                principal.user_id,
            )  # fmt: skip
        return await self._shown(principal, created)

    async def get(self, principal: Principal, customer_id: int) -> CustomerRead:
        principal.require("customer:read")
        shard = self._shard(customer_id, "customer")
        found = await self.shards.read(
            shard, repo.get_customer, customer_id, principal.owners("customer:read")
        )
        if found is None:
            raise NotFound(f"customer {customer_id} not found")
        return await self._shown(principal, found)

    async def update(
        self,
        principal: Principal,
        customer_id: int,
        data: CustomerUpdate,
        if_version: int | None = None,
    ) -> CustomerRead:
        principal.require("customer:write")
        changes = data.model_dump(exclude_unset=True)
        if "owner_id" in changes and changes["owner_id"] != principal.user_id:
            principal.require("customer:assign")
        changes = await self.custom.changes(changes)
        shard = self._shard(customer_id, "customer")
        async with await self.custom.claim(changes.get("custom_fields"), record=customer_id):
            outcome = await self.shards.write(
                shard, repo.update_customer, customer_id, changes, if_version,
                principal.user_id, principal.owners("customer:write"),
            )  # fmt: skip
            updated = written(outcome, "customer", customer_id, principal)
        return await self._shown(principal, updated)

    async def delete(
        self, principal: Principal, customer_id: int, if_version: int | None = None
    ) -> CustomerRead:
        """Soft delete; returns the record as deleted."""
        principal.require("customer:delete")
        shard = self._shard(customer_id, "customer")
        outcome = await self.shards.write(
            shard, repo.delete_customer, customer_id, if_version, principal.user_id,
            principal.owners("customer:delete"),
        )  # fmt: skip
        return await self._shown(principal, written(outcome, "customer", customer_id, principal))

    async def restore(self, principal: Principal, customer_id: int) -> CustomerRead:
        principal.require("customer:delete")
        shard = self._shard(customer_id, "customer")
        async with await self.custom.claim_restore(customer_id):
            restored = await self.shards.write(
                shard, repo.restore_customer, customer_id, principal.user_id,
                principal.owners("customer:delete"),
            )  # fmt: skip
            if restored is None:
                raise NotFound(f"customer {customer_id} not found")
        return await self._shown(principal, restored)

    async def history(
        self, principal: Principal, customer_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of a live customer's audited fields, on its shard."""
        await self.get(principal, customer_id)
        page = await self._history("customer", customer_id, query)
        return redact_changes(principal, "customer", page)

    async def list(self, principal: Principal, query: CustomerListQuery) -> Page[CustomerRead]:
        """Customers across every shard, in one global order, a page at a time;
        `cf.<key>[op]` filters checked against the custom field definitions."""
        principal.require("customer:read")
        order = validate_sort(query)
        sort = await self.custom.sort(order)
        position = decode_cursor(query)
        position = sort.position(position) if sort else position
        owners = principal.owners("customer:read")
        custom = await self.custom.filters(query.custom)
        runs_call = self.shards.gather(
            repo.list_customers, query, order, position, owners, custom, sort
        )
        if query.count:
            runs, counts = await asyncio.gather(
                runs_call, self.shards.gather(repo.count_customers, query, owners, custom)
            )
            total: int | None = sum(counts)
        else:
            runs, total = await runs_call, None
        key = sort.row_key if sort else row_key(order.field)
        items, cursor = merge_pages(runs, key, order, query.limit)
        items = await self.custom.shown_all(principal.redact_all("customer", items))
        return Page[CustomerRead](data=items, next_cursor=cursor, total=total)

    # -- contacts ------------------------------------------------------------------
    async def create_contact(
        self,
        principal: Principal,
        customer_id: int,
        data: ContactCreate,
        once: Once | None = None,
    ) -> ContactRead:
        """A contact of the customer, on its shard; with `once`, made once per key."""
        principal.require("contact:write")
        shard = self._shard(customer_id, "customer")
        data = await self.contact_fields.create(data)
        async with await self.contact_fields.claim(data.custom_fields, key=once):
            created = await write_once(
                self.shards, shard, once, ContactRead,
                repo.create_contact, shard, customer_id, data, principal.user_id,
                principal.owners("contact:write"),
            )  # fmt: skip
            if created is None:
                # Absent, or outside the caller's write scope: which one they may learn
                # only if their read scope reaches the customer.
                if principal.owners("contact:write") is not None and (
                    await self.shards.read(
                        shard, repo.get_customer, customer_id, principal.owners("contact:read")
                    )
                    is not None
                ):
                    raise Forbidden(f"your role may not add contacts to customer {customer_id}")
                raise NotFound(f"customer {customer_id} not found")
        return await self._contact(principal, created)

    async def create_contact_checked(
        self,
        principal: Principal,
        customer_id: int,
        data: ContactCreate,
        once: Once | None = None,
        duplicates: DuplicateMode = "warn",
    ) -> tuple[ContactRead, Ids]:
        """`create_contact` with its likely duplicates, as `create_checked` (by e-mail
        or phone among every contact, by name among the customer's)."""
        if duplicates == "ignore":
            return await self.create_contact(principal, customer_id, data, once), []
        probe = {**data.model_dump(), "customer_id": customer_id}
        if duplicates == "reject":
            shard = self._shard(customer_id, "customer")
            await self.refuse_duplicates(principal, "contact", probe, self._kept(once, shard))
            return await self.create_contact(principal, customer_id, data, once), []
        lookup = self._looking_up("contact", principal, probe)
        created = await _unless_failed(
            self.create_contact(principal, customer_id, data, once), lookup
        )
        return created, [i for i in await lookup if i != created.id]

    async def batch_contacts(
        self, principal: Principal, body: ContactBatch, key: Once | None = None
    ) -> ContactBatchResult:
        """Creates (each on its customer's shard), updates and deletes of contacts, as
        `batch` does customers."""
        plan = Plan(principal, "contact", ContactRead, ContactBatchResult, key)

        async def prepare(
            i: int, item: ContactBatchCreate | ContactBatchUpdate | BatchDelete
        ) -> None:
            if isinstance(item, ContactBatchCreate):
                principal.require("contact:write")
                shard = self._shard(item.customer_id, "customer")
                absent = _absent_customer(item.customer_id)
                field = f"items.{i}.data.custom_fields"
                data = await self.contact_fields.create(item.data, field)
                once = plan.item_key(i, item)
                claim = await self.contact_fields.claim(data.custom_fields, key=once, field=field)
                plan.add(
                    i, "create", shard, repo.create_contact, shard, item.customer_id,
                    data, principal.user_id, principal.owners("contact:write"),
                    key=once, explain=absent, claim=claim,
                )  # fmt: skip
                return
            shard = self._shard(item.id, "contact")
            if isinstance(item, ContactBatchUpdate):
                changes = item.data.model_dump(exclude_unset=True)
                field = f"items.{i}.data.custom_fields"
                changes = await self.contact_fields.changes(changes, field)
                claim = await self.contact_fields.claim(
                    changes.get("custom_fields"), record=item.id, field=field
                )
                plan.change(
                    i, item, shard, repo.update_contact, "contact:write", changes, claim=claim
                )
            else:
                plan.change(i, item, shard, repo.delete_contact, "contact:delete")

        done = await run_batch(plan, self.shards, body.items, prepare)
        return await self.contact_fields.shown_results(done)

    async def create_contact_from_source(
        self, principal: Principal, source_key: str, customer_id: int, data: ContactCreate
    ) -> ContactRead:
        """Idempotent create of a customer's contact for another service's operation:
        a repeat with the same `source_key` returns the contact the first call made."""
        principal.require("contact:write")
        shard = self._shard(customer_id, "customer")
        data = await self.contact_fields.create(data)
        async with await self.contact_fields.claim(data.custom_fields, key=f"source:{source_key}"):
            created = await self.shards.write(
                shard, repo.create_contact_from_source, shard, source_key, customer_id, data,
                principal.user_id,
            )  # fmt: skip
            if created is None:
                raise NotFound(f"customer {customer_id} not found")
        return await self._contact(principal, created)

    async def get_contact(self, principal: Principal, contact_id: int) -> ContactRead:
        principal.require("contact:read")
        shard = self._shard(contact_id, "contact")
        found = await self.shards.read(
            shard, repo.get_contact, contact_id, principal.owners("contact:read")
        )
        if found is None:
            raise NotFound(f"contact {contact_id} not found")
        return await self._contact(principal, found)

    async def update_contact(
        self,
        principal: Principal,
        contact_id: int,
        data: ContactUpdate,
        if_version: int | None = None,
    ) -> ContactRead:
        principal.require("contact:write")
        shard = self._shard(contact_id, "contact")
        changes = await self.contact_fields.changes(data.model_dump(exclude_unset=True))
        async with await self.contact_fields.claim(changes.get("custom_fields"), record=contact_id):
            outcome = await self.shards.write(
                shard, repo.update_contact, contact_id, changes, if_version, principal.user_id,
                principal.owners("contact:write"),
            )  # fmt: skip
            updated = written(outcome, "contact", contact_id, principal)
        return await self._contact(principal, updated)

    async def delete_contact(
        self, principal: Principal, contact_id: int, if_version: int | None = None
    ) -> ContactRead:
        principal.require("contact:delete")
        shard = self._shard(contact_id, "contact")
        outcome = await self.shards.write(
            shard, repo.delete_contact, contact_id, if_version, principal.user_id,
            principal.owners("contact:delete"),
        )  # fmt: skip
        return await self._contact(principal, written(outcome, "contact", contact_id, principal))

    async def restore_contact(self, principal: Principal, contact_id: int) -> ContactRead:
        principal.require("contact:delete")
        shard = self._shard(contact_id, "contact")
        async with await self.contact_fields.claim_restore(contact_id):
            restored = await self.shards.write(
                shard, repo.restore_contact, contact_id, principal.user_id,
                principal.owners("contact:delete"),
            )  # fmt: skip
            if restored is None:
                raise NotFound(f"contact {contact_id} not found")
        return await self._contact(principal, restored)

    async def contact_history(
        self, principal: Principal, contact_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        """Changes of a live contact's audited fields, on its customer's shard."""
        await self.get_contact(principal, contact_id)
        page = await self._history("contact", contact_id, query)
        return redact_changes(principal, "contact", page)

    async def list_contacts(
        self, principal: Principal, customer_id: int, query: ListQuery
    ) -> Page[ContactRead]:
        """A customer's contacts; one shard, since contacts live with their customer."""
        principal.require("contact:read")
        if query.count:
            raise Validation(
                "count is not offered on contacts", [{"field": "count", "message": "not supported"}]
            )
        order = validate_sort(query)
        sort = await self.contact_fields.sort(order)
        position = decode_cursor(query)
        position = sort.position(position) if sort else position
        shard = self._shard(customer_id, "customer")
        custom = await self.contact_fields.filters(query.custom)
        rows = await self.shards.read(
            shard, repo.list_contacts, customer_id, query.limit, order, position,
            principal.owners("contact:read"), custom, sort,
        )  # fmt: skip
        if rows is None:
            raise NotFound(f"customer {customer_id} not found")
        key = sort.row_key if sort else row_key(order.field)
        items, cursor = merge_pages([rows], key, order, query.limit)
        items = await self.contact_fields.shown_all(principal.redact_all("contact", items))
        return Page[ContactRead](data=items, next_cursor=cursor)

    # -- shared ----------------------------------------------------------------------
    async def _history(
        self, record_type: str, record_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        order = validate_sort(query)
        position = decode_cursor(query)
        rows = await self.shards.read(
            self._shard(record_id, record_type), list_changes, record_type, record_id,
            query.limit, order, position,
        )  # fmt: skip
        items, cursor = merge_pages([rows], row_key("created_at"), order, query.limit)
        return Page[ChangeRead](data=items, next_cursor=cursor)


def _absent_customer(customer_id: int) -> Callable[[Any], AppError | None]:
    """A batch contact create's answer None: its customer is absent (or outside the
    caller's write scope, which the single create tells apart with one more read)."""

    def explain(made: Any) -> AppError | None:
        if made is not None:
            return None
        return NotFound(
            f"customer {customer_id} not found (or not one your role may add contacts to)"
        )

    return explain


async def _unless_failed(write: Awaitable[T], lookup: asyncio.Task[Any]) -> T:
    """`write`'s result; the lookup beside it is cancelled when the write fails."""
    try:
        return await write
    except BaseException:
        lookup.cancel()
        raise
