"""The customer application: its ingress answers `/v1/customers/...` over HTTP and
`nextflow.v1.CustomerService` over gRPC, calling `CustomerService` in process;
`serve.get_app_handle("customer")` reaches the same service methods:

    customers = serve.get_app_handle("customer")
    customer = await customers.create.remote(principal, CustomerCreate(name="Acme"))
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.events import CUSTOMER_GROUP
from deployments._kit.ingress import ServiceIngress, app_handle
from deployments.auth.fields import FieldCache
from deployments.customer import routes
from deployments.customer.duplicates.service import KEYED_EVENTS
from deployments.customer.schemas import CustomerCreate, CustomerListQuery, CustomerUpdate
from deployments.customer.service import CustomerService
from gateway.principal import Principal
from gateway.rpc import (
    Call,
    GrpcIngress,
    from_proto,
    list_query,
    masked_update,
    record_id,
    to_proto,
)
from nextflow.v1 import common_pb2, customers_pb2
from shards.client import Database, Shards

_WRITABLE = frozenset(CustomerUpdate.model_fields)


@serve.deployment(name="CustomerService")
@serve.ingress()
class CustomerApp(ServiceIngress, GrpcIngress):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        peers = {app: app_handle(app) for app in ("sales", "support", "marketing", "file")}
        fields = FieldCache(Database("auth"))
        settings = get_settings()
        redis = redis_client.connect(settings.redis_url, socket_timeout=5)
        self._svc = CustomerService(
            await Shards.connect("customer"), peers, fields, redis, Database("integration")
        )
        self.open_ingress(self._svc, title="NextFlow customers", routers=routes.routers)
        self.every(
            settings.activity_reminder_interval_s, self._svc.send_reminders,
            "the task reminder sweep",
        )  # fmt: skip
        # The match keys of likely duplicates follow every customer and contact write
        # (deployments/customer/duplicates/).
        self.consume(redis, CUSTOMER_GROUP, batch_handler=self._svc.keep_keys, types=KEYED_EVENTS)
        # An import's records (and a rebuild's), once no import runs.
        self.every(
            settings.duplicate_keys_backlog_interval_s, self._svc.keep_waiting_keys,
            "the duplicate keys' backlog",
        )  # fmt: skip

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer. A database
        that is down is reported by `ready()`, not fixed by restarting this replica."""
        await self._svc.shards.alive()

    async def ready(self) -> None:
        """Readiness: every database this service uses answers `SELECT 1`."""
        await self._svc.shards.ping()

    # -- nextflow.v1.CustomerService (gRPC) -------------------------------------------

    async def GetCustomer(  # noqa: N802 (the RPC's name)
        self, request: customers_pb2.GetCustomerRequest, grpc_context: Any
    ) -> customers_pb2.Customer:
        async def run(principal: Principal, call: Call) -> customers_pb2.Customer:
            found = await self._service.get(principal, record_id(request.id))
            return to_proto(found, customers_pb2.Customer)

        return await self._call(grpc_context, customers_pb2.Customer, run)

    async def ListCustomers(  # noqa: N802
        self, request: common_pb2.ListRequest, grpc_context: Any
    ) -> customers_pb2.ListCustomersResponse:
        async def run(principal: Principal, call: Call) -> customers_pb2.ListCustomersResponse:
            query = list_query(request, CustomerListQuery)
            page = await self._service.list(principal, query)
            return to_proto(page, customers_pb2.ListCustomersResponse)

        return await self._call(grpc_context, customers_pb2.ListCustomersResponse, run)

    async def CreateCustomer(  # noqa: N802
        self, request: customers_pb2.CreateCustomerRequest, grpc_context: Any
    ) -> customers_pb2.Customer:
        async def run(principal: Principal, call: Call) -> customers_pb2.Customer:
            data = CustomerCreate.model_validate(from_proto(request))
            made = await self._service.create(principal, data, call.once(request))
            return await self._write(principal, call, made, customers_pb2.Customer)

        return await self._call(grpc_context, customers_pb2.Customer, run)

    async def UpdateCustomer(  # noqa: N802
        self, request: customers_pb2.UpdateCustomerRequest, grpc_context: Any
    ) -> customers_pb2.Customer:
        async def run(principal: Principal, call: Call) -> customers_pb2.Customer:
            version = call.version()
            data = CustomerUpdate.model_validate(
                masked_update(request.customer, list(request.update_mask.paths), _WRITABLE)
            )
            changed = await self._service.update(principal, record_id(request.id), data, version)
            return await self._write(principal, call, changed, customers_pb2.Customer)

        return await self._call(grpc_context, customers_pb2.Customer, run)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.customer.app:build_app`)."""
    return CustomerApp.bind()  # type: ignore[attr-defined, no-any-return]
