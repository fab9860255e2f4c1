"""The integration application: its ingress answers `/v1/integration/...` over HTTP
(bulk CSV import and CSV export as jobs, jobs), calling `IntegrationService` in
process. An import runs in the replica that took its upload; an export in the replica
that accepted it, paging through the customer application (a Serve handle: real
composition) into the blob store. `serve.get_app_handle("integration")` reaches the
same service methods (an import from a file already on that replica's machine):

    integration = serve.get_app_handle("integration")
    accepted = await integration.start_customer_import.remote(principal, "/path/upload.csv")
    job = await integration.get_job.remote(principal, accepted.job_id)
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve import Application

from cluster import heap
from cluster.settings import get_settings
from deployments._kit.ingress import ServiceIngress, app_handle
from deployments.auth.fields import FieldCache
from deployments.customer.schemas import CustomerListQuery, CustomerRead
from deployments.file.blobs import blob_store
from deployments.integration import routes
from deployments.integration.service import IntegrationService, upload_dir
from deployments.integration.tasks import parse_in_task, parsers
from gateway.listing import Page
from gateway.principal import Principal
from shards.client import Database, Shards

log = logging.getLogger("nextflow.integration")


@serve.deployment(name="IntegrationService")
@serve.ingress()
class IntegrationApp(ServiceIngress):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        s = get_settings()
        self._svc = IntegrationService(
            Database("integration"),
            await Shards.connect("customer"),
            upload_dir(s.data_dir),
            parse_remote=parse_in_task,
            parsers=parsers(s.import_parsers),
            max_rows=s.import_max_rows,
            max_running_per_user=s.import_max_running_per_user,
            store=blob_store(),
            list_customers=_list_customers,
            fields=FieldCache(Database("auth")),
            apps=_Apps(),
        )
        self.open_ingress(self._svc, title="NextFlow integration", routers=[routes.router])
        abandoned = await self._svc.fail_abandoned()
        if abandoned:
            log.warning("marked %d abandoned job(s) failed", abandoned)
        keep = s.export_keep_s
        self.every(
            s.export_sweep_interval_s, lambda: self._svc.remove_old_exports(keep), "export sweep"
        )
        heap.settle()  # imports build many objects per row (cluster/heap.py)

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer. A database
        that is down is reported by `ready()`, not fixed by restarting this replica."""
        await self._svc.customers.alive()

    async def ready(self) -> None:
        """Readiness: the jobs database and every customer database answer."""
        await self._svc.jobs.ping()
        await self._svc.customers.ping()


class _Apps:
    """The services' deployment handles, by application name (privacy exports)."""

    def __getitem__(self, app: str) -> Any:
        return app_handle(app)


async def _list_customers(principal: Principal, query: CustomerListQuery) -> Page[CustomerRead]:
    """A page of customers from the customer application, as its own list answers."""
    page: Page[CustomerRead] = await app_handle("customer").list.remote(principal, query)
    return page


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.integration.app:build_app`)."""
    return IntegrationApp.bind()  # type: ignore[attr-defined, no-any-return]
