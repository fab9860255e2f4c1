"""`FileService` as a Ray Serve deployment: thin; every method takes the caller's
`Principal` first. Content never crosses Ray (the gateway streams it to the blob
store, see gateway/routes/files.py); these calls carry metadata only.

    handle = serve.get_deployment_handle("FileService", app_name="nextflow")
    page = await handle.list.remote(principal, FileListQuery(owner_type="deal", owner_id=7))
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
from deployments.file.blobs import blob_store
from deployments.file.schemas import FileCommit, FileContent, FileListQuery, FileRead, Owner
from deployments.file.service import FileService as _Logic
from deployments.file.service import OwnerLookup
from gateway.listing import Page
from gateway.principal import Principal
from shards.client import Shards

log = logging.getLogger("nextflow.files")


def _lookups(
    customers: DeploymentHandle[Any] | None,
    sales: DeploymentHandle[Any] | None,
    support: DeploymentHandle[Any] | None,
    marketing: DeploymentHandle[Any] | None,
) -> dict[str, OwnerLookup]:
    """Owner type -> the owning service's `get` (raises NotFound for no such record)."""
    found: dict[str, OwnerLookup] = {}
    if customers is not None:
        found["customer"] = lambda p, i: customers.get.remote(p, i)
        found["contact"] = lambda p, i: customers.get_contact.remote(p, i)
    if sales is not None:
        found["deal"] = lambda p, i: sales.get_deal.remote(p, i)
    if support is not None:
        found["ticket"] = lambda p, i: support.get.remote(p, i)
    if marketing is not None:
        found["lead"] = lambda p, i: marketing.get_lead.remote(p, i)
    return found


@serve.deployment(name="FileService")
class FileDeployment:
    async def __init__(  # type: ignore[misc]  # Serve awaits async inits
        self,
        customers: DeploymentHandle[Any] | None = None,
        sales: DeploymentHandle[Any] | None = None,
        support: DeploymentHandle[Any] | None = None,
        marketing: DeploymentHandle[Any] | None = None,
    ) -> None:
        self._svc = _Logic(
            await Shards.connect("file"),
            blob_store(),
            _lookups(customers, sales, support, marketing),
        )
        settings = get_settings()
        self._sweeper = (
            asyncio.get_running_loop().create_task(
                self._sweep_forever(
                    settings.file_orphan_sweep_interval_s, settings.file_orphan_age_s
                )
            )
            if settings.file_orphan_sweep_interval_s > 0
            else None
        )

    async def _sweep_forever(self, interval: float, age: float) -> None:
        await asyncio.sleep(random.uniform(0, interval))  # replicas out of step
        while True:
            try:
                await self._svc.sweep_orphans(age)
            except Exception:  # a shard down now is retried on the next round
                log.warning("orphan blob sweep failed", exc_info=True)
            await asyncio.sleep(interval)

    def __del__(self) -> None:
        sweeper = getattr(self, "_sweeper", None)
        if sweeper is not None:
            with contextlib.suppress(RuntimeError):
                sweeper.cancel()

    async def check_health(self) -> None:
        await self._svc.shards.alive()

    async def ready(self) -> None:
        await self._svc.shards.ping()

    @boundary
    async def prepare_upload(self, principal: Principal, owner: Owner) -> None:
        return await self._svc.prepare_upload(principal, owner)

    @boundary
    async def commit_upload(self, principal: Principal, data: FileCommit) -> FileRead:
        return await self._svc.commit_upload(principal, data)

    @boundary
    async def get(self, principal: Principal, file_id: int) -> FileRead:
        return await self._svc.get(principal, file_id)

    @boundary
    async def get_content(self, principal: Principal, file_id: int) -> FileContent:
        return await self._svc.get_content(principal, file_id)

    @boundary
    async def list(self, principal: Principal, query: FileListQuery) -> Page[FileRead]:
        return await self._svc.list(principal, query)

    @boundary
    async def history(
        self, principal: Principal, file_id: int, query: HistoryQuery
    ) -> Page[ChangeRead]:
        return await self._svc.history(principal, file_id, query)

    @boundary
    async def delete(self, principal: Principal, file_id: int) -> FileRead:
        return await self._svc.delete(principal, file_id)

    @boundary
    async def sweep_orphans(self, principal: Principal, older_than_s: float) -> int:
        """Remove unreferenced blobs older than that now (admins; also periodic)."""
        principal.require("user:write")
        return await self._svc.sweep_orphans(older_than_s)
