"""The file application: its ingress answers `/v1/files/...` over HTTP, streaming
content between the client and the blob store and calling `FileService` in process for
metadata only (see deployments/file/routes.py). Every replica sweeps orphan blobs
now and then. `serve.get_app_handle("file")` reaches the same service methods (content
never crosses Ray; these calls carry metadata only):

    files = serve.get_app_handle("file")
    page = await files.list.remote(principal, FileListQuery(owner_type="deal", owner_id=7))
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve
from ray.serve import Application

from cluster.settings import get_settings
from deployments._kit.ingress import ServiceIngress, app_handle
from deployments.file import routes
from deployments.file.blobs import blob_store
from deployments.file.service import FileService, OwnerLookup
from shards.client import Shards

log = logging.getLogger("nextflow.files")


def _lookups() -> dict[str, OwnerLookup]:
    """Owner type -> the owning service's `get` (raises NotFound for no such record),
    asked of that service's application through a Serve handle. Each handle is taken
    on first use, not here: the other applications may still be deploying while this
    replica starts (and Serve caches a handle once it is taken)."""

    def ask(app: str, method: str) -> OwnerLookup:
        return lambda p, i: getattr(app_handle(app), method).remote(p, i)

    return {
        "customer": ask("customer", "get"),
        "contact": ask("customer", "get_contact"),
        "deal": ask("sales", "get_deal"),
        "ticket": ask("support", "get"),
        "lead": ask("marketing", "get_lead"),
    }


@serve.deployment(name="FileService")
@serve.ingress()
class FileApp(ServiceIngress):
    async def __init__(self) -> None:  # type: ignore[misc]  # Serve awaits async inits
        self._svc = FileService(await Shards.connect("file"), blob_store(), _lookups())
        self.open_ingress(self._svc, title="NextFlow files", routers=[routes.router])
        settings = get_settings()
        age = settings.file_orphan_age_s
        self.every(
            settings.file_orphan_sweep_interval_s,
            lambda: self._svc.remove_orphans(age),
            "orphan blob sweep",
        )

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer. A database
        that is down is reported by `ready()`, not fixed by restarting this replica."""
        await self._svc.shards.alive()

    async def ready(self) -> None:
        """Readiness: every database this service uses answers `SELECT 1`."""
        await self._svc.shards.ping()


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.file.app:build_app`)."""
    return FileApp.bind()  # type: ignore[attr-defined, no-any-return]
