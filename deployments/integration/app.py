"""The integration application: its ingress answers `/v1/integration/...` over HTTP
(bulk CSV import as a job, jobs, CSV export), calling `IntegrationService` in process.
An import runs in the replica that took its upload; the export pages through the
customer application. `serve.get_app_handle("integration")` reaches the same service
methods (an import from a file already on that replica's machine):

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
from deployments._kit.ingress import ServiceIngress
from deployments.integration import routes
from deployments.integration.service import IntegrationService, upload_dir
from deployments.integration.tasks import parse_in_task, parsers
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
        )
        self.open_ingress(self._svc, title="NextFlow integration", routers=[routes.router])
        abandoned = await self._svc.fail_abandoned()
        if abandoned:
            log.warning("marked %d abandoned job(s) failed", abandoned)
        heap.settle()  # imports build many objects per row (cluster/heap.py)

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer. A database
        that is down is reported by `ready()`, not fixed by restarting this replica."""
        await self._svc.customers.alive()

    async def ready(self) -> None:
        """Readiness: the jobs database and every customer database answer."""
        await self._svc.jobs.ping()
        await self._svc.customers.ping()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.integration.app:build_app`)."""
    return IntegrationApp.bind()  # type: ignore[attr-defined, no-any-return]
