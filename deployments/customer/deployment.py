"""`CustomerService` as a Ray Serve deployment: thin; every method takes the caller's
`Principal` first and the same pydantic models the HTTP routes use.

    handle = serve.get_deployment_handle("CustomerService", app_name="nextflow")
    customer = await handle.create.remote(principal, CustomerCreate(name="Acme"))
"""

from __future__ import annotations

from ray import serve

from deployments._kit.boundary import BatchedCalls, boundary
from deployments._kit.history import ChangeRead, HistoryQuery
from deployments._kit.listing import ListQuery, Page
from deployments._kit.principal import Principal
from deployments.customer.schemas import (
    ContactCreate,
    ContactRead,
    ContactUpdate,
    CustomerCreate,
    CustomerListQuery,
    CustomerRead,
    CustomerUpdate,
)
from deployments.customer.service import CustomerService as _Logic
from shards.client import Shards

# Short calls a caller may send many of in one Serve request (`call_batch`).
BATCHED = frozenset(
    {
        "get", "create", "update", "delete", "restore",
        "get_contact", "create_contact", "update_contact", "delete_contact", "restore_contact",
    }
)  # fmt: skip


@serve.deployment(name="CustomerService")
class CustomerDeployment(BatchedCalls):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        self._svc = _Logic(await Shards.connect("customer"))

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer. A database
        that is down is reported by `ready()`, not fixed by restarting this replica."""
        await self._svc.shards.alive()

    async def ready(self) -> None:
        """Readiness: every database this service uses answers `SELECT 1`."""
        await self._svc.shards.ping()

    @boundary
    async def create(self, principal: Principal, data: CustomerCreate) -> CustomerRead:
        return await self._svc.create(principal, data)

    @boundary
    async def create_from_source(
        self, principal: Principal, source_key: str, data: CustomerCreate
    ) -> CustomerRead:
        """Idempotent create for another service (not on HTTP): a repeat with the same
        `source_key` returns the customer the first call made."""
        return await self._svc.create_from_source(principal, source_key, data)

    @boundary
    async def get(self, principal: Principal, customer_id: int) -> CustomerRead:
        return await self._svc.get(principal, customer_id)

    @boundary
    async def update(
        self,
        principal: Principal,
        customer_id: int,
        data: CustomerUpdate,
        if_version: int | None = None,
    ) -> CustomerRead:
        return await self._svc.update(principal, customer_id, data, if_version)

    @boundary
    async def delete(
        self, principal: Principal, customer_id: int, if_version: int | None = None
    ) -> CustomerRead:
        return await self._svc.delete(principal, customer_id, if_version)

    @boundary
    async def restore(self, principal: Principal, customer_id: int) -> CustomerRead:
        return await self._svc.restore(principal, customer_id)

    @boundary
    async def history(
        self, principal: Principal, customer_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.history(principal, customer_id, query)

    @boundary
    async def list(self, principal: Principal, query: CustomerListQuery) -> Page[CustomerRead]:
        return await self._svc.list(principal, query)

    @boundary
    async def create_contact(
        self, principal: Principal, customer_id: int, data: ContactCreate
    ) -> ContactRead:
        return await self._svc.create_contact(principal, customer_id, data)

    @boundary
    async def create_contact_from_source(
        self, principal: Principal, source_key: str, customer_id: int, data: ContactCreate
    ) -> ContactRead:
        """Idempotent contact create for another service (not on HTTP)."""
        return await self._svc.create_contact_from_source(principal, source_key, customer_id, data)

    @boundary
    async def get_contact(self, principal: Principal, contact_id: int) -> ContactRead:
        return await self._svc.get_contact(principal, contact_id)

    @boundary
    async def update_contact(
        self,
        principal: Principal,
        contact_id: int,
        data: ContactUpdate,
        if_version: int | None = None,
    ) -> ContactRead:
        return await self._svc.update_contact(principal, contact_id, data, if_version)

    @boundary
    async def delete_contact(
        self, principal: Principal, contact_id: int, if_version: int | None = None
    ) -> ContactRead:
        return await self._svc.delete_contact(principal, contact_id, if_version)

    @boundary
    async def restore_contact(self, principal: Principal, contact_id: int) -> ContactRead:
        return await self._svc.restore_contact(principal, contact_id)

    @boundary
    async def list_contacts(
        self, principal: Principal, customer_id: int, query: ListQuery
    ) -> Page[ContactRead]:
        return await self._svc.list_contacts(principal, customer_id, query)

    @boundary
    async def contact_history(
        self, principal: Principal, contact_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.contact_history(principal, contact_id, query)
