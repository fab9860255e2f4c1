"""`IntegrationService` as a Ray Serve deployment: jobs and bulk imports.

handle = serve.get_deployment_handle("IntegrationService", app_name="nextflow")
accepted = await handle.start_customer_import.remote(principal, "/path/upload.csv")
job = await handle.get_job.remote(principal, accepted.job_id)
"""

from __future__ import annotations

import logging

from ray import serve

from cluster import heap
from cluster.settings import get_settings
from deployments._kit.boundary import boundary
from deployments.integration.repo import JobAccepted, JobRead
from deployments.integration.service import IntegrationService as _Logic
from deployments.integration.service import upload_dir
from deployments.integration.tasks import parse_in_task, parsers
from gateway.principal import Principal
from shards.client import Database, Shards

log = logging.getLogger("nextflow.integration")


@serve.deployment(name="IntegrationService")
class IntegrationDeployment:
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        s = get_settings()
        self._svc = _Logic(
            Database("integration"),
            await Shards.connect("customer"),
            upload_dir(s.data_dir),
            parse_remote=parse_in_task,
            parsers=parsers(s.import_parsers),
            max_rows=s.import_max_rows,
            max_running_per_user=s.import_max_running_per_user,
        )
        abandoned = await self._svc.fail_abandoned()
        if abandoned:
            log.warning("marked %d abandoned job(s) failed", abandoned)
        heap.settle()  # imports build many objects per row (cluster/heap.py)

    async def check_health(self) -> None:
        await self._svc.customers.alive()

    async def ready(self) -> None:
        await self._svc.jobs.ping()
        await self._svc.customers.ping()

    @boundary
    async def start_customer_import(self, principal: Principal, upload: str) -> JobAccepted:
        """Import a CSV file already on this machine's disk (the gateway streamed the
        upload there; this service owns and deletes it). Returns at once."""
        return await self._svc.start_customer_import(principal, upload)

    @boundary
    async def get_job(self, principal: Principal, job_id: int) -> JobRead:
        return await self._svc.get_job(principal, job_id)

    @boundary
    async def cancel_job(self, principal: Principal, job_id: int) -> JobRead:
        return await self._svc.cancel_job(principal, job_id)

    @boundary
    async def error_file(self, principal: Principal, job_id: int) -> str:
        """The path of a finished import's error CSV (on this machine)."""
        return await self._svc.error_file(principal, job_id)
