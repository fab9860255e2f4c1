"""`SupportService` as a Ray Serve deployment: thin; every method takes the caller's
`Principal` first and the same pydantic models the HTTP routes use.

    handle = serve.get_deployment_handle("SupportService", app_name="nextflow")
    ticket = await handle.create.remote(principal, TicketCreate(customer_id=..., subject="..."))

Each replica also runs the SLA sweep every `NEXTFLOW_SLA_SWEEP_INTERVAL_S` seconds; it
is idempotent, so replicas sweeping at the same time only repeat a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster.settings import get_settings
from deployments._kit.boundary import boundary
from deployments._kit.history import ChangeRead, HistoryQuery
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
    TicketCreate,
    TicketListQuery,
    TicketRead,
    TicketStatusChange,
    TicketUpdate,
)
from deployments.support.service import SupportService as _Logic
from gateway.errors import NotFound
from gateway.listing import Page
from gateway.principal import Principal
from shards.client import Database, Shards

log = logging.getLogger("nextflow.support")


class _CustomerHandle:
    """The Customer service as support needs it: existence checks, made with only
    `customer:read` / `contact:read` (a ticket writer need not hold more)."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    @staticmethod
    def _reader(principal: Principal) -> Principal:
        return principal.model_copy(
            update={"permissions": frozenset({"customer:read", "contact:read"})}
        )

    async def exists(self, principal: Principal, customer_id: int) -> bool:
        try:
            await self._handle.get.remote(self._reader(principal), customer_id)
        except NotFound:
            return False
        return True

    async def customer_of_contact(self, principal: Principal, contact_id: int) -> int | None:
        try:
            contact = await self._handle.get_contact.remote(self._reader(principal), contact_id)
        except NotFound:
            return None
        return int(contact.customer_id)


@serve.deployment(name="SupportService")
class SupportDeployment:
    async def __init__(self, customers: DeploymentHandle[Any]) -> None:  # type: ignore[misc]
        self._svc = _Logic(
            await Shards.connect("support"), Database("support_config"), _CustomerHandle(customers)
        )
        interval = get_settings().sla_sweep_interval_s
        self._sweeper = (
            asyncio.get_running_loop().create_task(self._sweep_forever(interval))
            if interval > 0
            else None
        )

    async def _sweep_forever(self, interval: float) -> None:
        # Replicas start out of step (jitter): their sweeps rarely overlap, and an
        # overlap is harmless.
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            try:
                await self._svc.sweep_sla()
            except Exception:  # a shard down now is retried on the next round
                log.warning("SLA sweep failed; retrying in %.0f s", interval, exc_info=True)
            await asyncio.sleep(interval)

    def __del__(self) -> None:
        sweeper = getattr(self, "_sweeper", None)
        if sweeper is not None:
            with contextlib.suppress(RuntimeError):
                sweeper.cancel()

    async def check_health(self) -> None:
        await self._svc.shards.alive()

    async def ready(self) -> None:
        """Readiness: the support database on every shard server and support_config."""
        await asyncio.gather(self._svc.shards.ping(), self._svc.config.ping())

    # -- tickets -----------------------------------------------------------------------
    @boundary
    async def create(self, principal: Principal, data: TicketCreate) -> TicketRead:
        return await self._svc.create(principal, data)

    @boundary
    async def get(self, principal: Principal, ticket_id: int) -> TicketRead:
        return await self._svc.get(principal, ticket_id)

    @boundary
    async def update(
        self,
        principal: Principal,
        ticket_id: int,
        data: TicketUpdate,
        if_version: int | None = None,
    ) -> TicketRead:
        return await self._svc.update(principal, ticket_id, data, if_version)

    @boundary
    async def set_status(
        self,
        principal: Principal,
        ticket_id: int,
        data: TicketStatusChange,
        if_version: int | None = None,
    ) -> TicketRead:
        return await self._svc.set_status(principal, ticket_id, data, if_version)

    @boundary
    async def assign(
        self,
        principal: Principal,
        ticket_id: int,
        data: TicketAssign,
        if_version: int | None = None,
    ) -> TicketRead:
        return await self._svc.assign(principal, ticket_id, data, if_version)

    @boundary
    async def delete(
        self, principal: Principal, ticket_id: int, if_version: int | None = None
    ) -> TicketRead:
        return await self._svc.delete(principal, ticket_id, if_version)

    @boundary
    async def restore(self, principal: Principal, ticket_id: int) -> TicketRead:
        return await self._svc.restore(principal, ticket_id)

    @boundary
    async def list(self, principal: Principal, query: TicketListQuery) -> Page[TicketRead]:
        return await self._svc.list(principal, query)

    @boundary
    async def list_for_customer(
        self, principal: Principal, customer_id: int, query: TicketListQuery
    ) -> Page[TicketRead]:
        return await self._svc.list_for_customer(principal, customer_id, query)

    @boundary
    async def history(
        self, principal: Principal, ticket_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.history(principal, ticket_id, query)

    @boundary
    async def add_comment(
        self, principal: Principal, ticket_id: int, data: CommentCreate
    ) -> CommentRead:
        return await self._svc.add_comment(principal, ticket_id, data)

    @boundary
    async def list_comments(
        self, principal: Principal, ticket_id: int, query: CommentListQuery
    ) -> Page[CommentRead]:
        return await self._svc.list_comments(principal, ticket_id, query)

    @boundary
    async def sweep_sla(self, principal: Principal) -> SweepResult:
        """Store SLA breach flags now (needs `sla:write`); the periodic sweep does the
        same without a caller."""
        return await self._svc.sweep_sla_as(principal)

    # -- queues ------------------------------------------------------------------------
    @boundary
    async def create_queue(self, principal: Principal, data: QueueCreate) -> QueueRead:
        return await self._svc.create_queue(principal, data)

    @boundary
    async def get_queue(self, principal: Principal, queue_id: int) -> QueueRead:
        return await self._svc.get_queue(principal, queue_id)

    @boundary
    async def queue_history(
        self, principal: Principal, queue_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.queue_history(principal, queue_id, query)

    @boundary
    async def list_queues(self, principal: Principal, query: QueueListQuery) -> Page[QueueRead]:
        return await self._svc.list_queues(principal, query)

    @boundary
    async def update_queue(
        self,
        principal: Principal,
        queue_id: int,
        data: QueueUpdate,
        if_version: int | None = None,
    ) -> QueueRead:
        return await self._svc.update_queue(principal, queue_id, data, if_version)

    @boundary
    async def delete_queue(
        self, principal: Principal, queue_id: int, if_version: int | None = None
    ) -> QueueRead:
        return await self._svc.delete_queue(principal, queue_id, if_version)

    @boundary
    async def restore_queue(self, principal: Principal, queue_id: int) -> QueueRead:
        return await self._svc.restore_queue(principal, queue_id)

    @boundary
    async def put_member(
        self, principal: Principal, queue_id: int, user_id: int, data: QueueMemberPut
    ) -> QueueRead:
        return await self._svc.put_member(principal, queue_id, user_id, data)

    @boundary
    async def remove_member(self, principal: Principal, queue_id: int, user_id: int) -> QueueRead:
        return await self._svc.remove_member(principal, queue_id, user_id)

    # -- SLA policies ------------------------------------------------------------------
    @boundary
    async def list_sla_policies(self, principal: Principal) -> Page[SlaPolicyRead]:
        return await self._svc.list_sla_policies(principal)

    @boundary
    async def put_sla_policy(
        self,
        principal: Principal,
        priority: str,
        data: SlaPolicyPut,
        if_version: int | None = None,
    ) -> SlaPolicyRead:
        return await self._svc.put_sla_policy(principal, priority, data, if_version)

    @boundary
    async def sla_policy_history(
        self, principal: Principal, priority: str, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.sla_policy_history(principal, priority, query)
