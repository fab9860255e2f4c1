"""The support application: its ingress answers `/v1/support/...` over HTTP (tickets,
queues, SLA policies) and `nextflow.v1.TicketService` over gRPC, calling
`SupportService` in process; `serve.get_app_handle("support")` reaches the same
service methods:

    support = serve.get_app_handle("support")
    ticket = await support.create.remote(principal, TicketCreate(customer_id=..., subject="..."))

It checks customers and contacts through the customer application's handle. Each
replica also runs the SLA sweep every `NEXTFLOW_SLA_SWEEP_INTERVAL_S` seconds; it is
idempotent, so replicas sweeping at the same time only repeat a no-op.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from cluster.settings import get_settings
from deployments._kit.ingress import ServiceIngress, app_handle
from deployments.auth.fields import FieldCache
from deployments.support import routes
from deployments.support.schemas import TicketCreate, TicketListQuery
from deployments.support.service import SupportService
from gateway.errors import NotFound
from gateway.principal import Principal
from gateway.rpc import Call, GrpcIngress, from_proto, list_query, record_id, to_proto
from nextflow.v1 import common_pb2, tickets_pb2
from shards.client import Database, Shards

log = logging.getLogger("nextflow.support")


class _CustomerHandle:
    """The customer application as support needs it: existence checks, made with only
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
@serve.ingress()
class SupportApp(ServiceIngress, GrpcIngress):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        self._svc = SupportService(
            await Shards.connect("support"),
            Database("support_config"),
            _CustomerHandle(app_handle("customer")),
            fields=FieldCache(Database("auth")),
        )
        self.open_ingress(self._svc, title="NextFlow support", routers=[routes.router])
        self.every(get_settings().sla_sweep_interval_s, self._svc.sweep_all, "SLA sweep")

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer."""
        await self._svc.shards.alive()

    async def ready(self) -> None:
        """Readiness: the support database on every shard server and support_config."""
        await asyncio.gather(self._svc.shards.ping(), self._svc.config.ping())

    # -- nextflow.v1.TicketService (gRPC) ---------------------------------------------

    async def GetTicket(  # noqa: N802 (the RPC's name)
        self, request: tickets_pb2.GetTicketRequest, grpc_context: Any
    ) -> tickets_pb2.Ticket:
        async def run(principal: Principal, call: Call) -> tickets_pb2.Ticket:
            found = await self._service.get(principal, record_id(request.id))
            return to_proto(found, tickets_pb2.Ticket)

        return await self._call(grpc_context, tickets_pb2.Ticket, run)

    async def ListTickets(  # noqa: N802
        self, request: common_pb2.ListRequest, grpc_context: Any
    ) -> tickets_pb2.ListTicketsResponse:
        async def run(principal: Principal, call: Call) -> tickets_pb2.ListTicketsResponse:
            query = list_query(request, TicketListQuery)
            page = await self._service.list(principal, query)
            return to_proto(page, tickets_pb2.ListTicketsResponse)

        return await self._call(grpc_context, tickets_pb2.ListTicketsResponse, run)

    async def CreateTicket(  # noqa: N802
        self, request: tickets_pb2.CreateTicketRequest, grpc_context: Any
    ) -> tickets_pb2.Ticket:
        async def run(principal: Principal, call: Call) -> tickets_pb2.Ticket:
            data = TicketCreate.model_validate(from_proto(request))
            made = await self._service.create(principal, data)
            return await self._write(principal, call, made, tickets_pb2.Ticket)

        return await self._call(grpc_context, tickets_pb2.Ticket, run, idempotent=request)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.support.app:build_app`)."""
    return SupportApp.bind()  # type: ignore[attr-defined, no-any-return]
