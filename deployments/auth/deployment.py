"""`AuthService` as a Ray Serve deployment (thin; logic in service.py).

handle = serve.get_deployment_handle("AuthService", app_name="nextflow")
tokens = await handle.login.remote(LoginRequest(email=..., password=...))
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray import serve

from cluster import redis_client
from cluster.settings import get_settings
from deployments._kit.boundary import boundary
from deployments.auth import idempotency
from deployments.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    LoginRequest,
    RoleRead,
    RoleUpdate,
    TeamCreate,
    TeamRead,
    TokenPair,
    UserCreate,
    UserListQuery,
    UserRead,
    UserUpdate,
)
from deployments.auth.service import AuthService as _Logic
from gateway.listing import Page
from gateway.principal import Principal
from shards.client import Database

log = logging.getLogger("nextflow.service")


@serve.deployment(name="AuthService")
class AuthDeployment:
    def __init__(self) -> None:
        settings = get_settings()
        redis = redis_client.connect(settings.redis_url)
        self._svc = _Logic(Database("auth"), settings, redis)
        self._idem_lease_s = settings.request_timeout_s + 30
        self._idem_retention_s = settings.idempotency_retention_s
        self._idem_swept = 0.0

    async def check_health(self) -> None:
        """Serve's periodic liveness check: the shard manager actors answer. A database
        that is down is reported by `ready()`, not fixed by restarting this replica."""
        await self._svc.db.alive()

    async def ready(self) -> None:
        """Readiness: every database this service uses answers `SELECT 1`."""
        await self._svc.db.ping()

    @boundary
    async def login(self, request: LoginRequest) -> TokenPair:
        return await self._svc.login(request)

    @boundary
    async def refresh(self, refresh_token: str) -> TokenPair:
        return await self._svc.refresh(refresh_token)

    @boundary
    async def logout(self, refresh_token: str, access_token: str | None = None) -> None:
        await self._svc.logout(refresh_token, access_token)

    @boundary
    async def authenticate_api_key(self, key: str) -> Principal:
        return await self._svc.authenticate_api_key(key)

    @boundary
    async def me(self, principal: Principal) -> UserRead:
        return await self._svc.me(principal)

    @boundary
    async def create_user(self, principal: Principal, data: UserCreate) -> UserRead:
        return await self._svc.create_user(principal, data)

    @boundary
    async def get_user(self, principal: Principal, user_id: int) -> UserRead:
        return await self._svc.get_user(principal, user_id)

    @boundary
    async def list_users(self, principal: Principal, query: UserListQuery) -> Page[UserRead]:
        return await self._svc.list_users(principal, query)

    @boundary
    async def update_user(
        self, principal: Principal, user_id: int, data: UserUpdate, if_version: int | None = None
    ) -> UserRead:
        return await self._svc.update_user(principal, user_id, data, if_version)

    @boundary
    async def deactivate_user(
        self, principal: Principal, user_id: int, if_version: int | None = None
    ) -> UserRead:
        return await self._svc.deactivate_user(principal, user_id, if_version)

    @boundary
    async def roles(self, principal: Principal) -> list[RoleRead]:
        return await self._svc.roles(principal)

    @boundary
    async def update_role(self, principal: Principal, name: str, data: RoleUpdate) -> RoleRead:
        return await self._svc.update_role(principal, name, data)

    @boundary
    async def create_team(self, principal: Principal, data: TeamCreate) -> TeamRead:
        return await self._svc.create_team(principal, data)

    @boundary
    async def list_teams(self, principal: Principal) -> list[TeamRead]:
        return await self._svc.list_teams(principal)

    @boundary
    async def create_api_key(self, principal: Principal, data: ApiKeyCreate) -> ApiKeyCreated:
        return await self._svc.create_api_key(principal, data)

    @boundary
    async def list_api_keys(self, principal: Principal) -> list[ApiKeyRead]:
        return await self._svc.list_api_keys(principal)

    @boundary
    async def revoke_api_key(self, principal: Principal, key_id: int) -> ApiKeyRead:
        return await self._svc.revoke_api_key(principal, key_id)

    # -- Idempotency-Key (gateway/idempotency.py) --------------------------------------
    @boundary
    async def idempotency_claim(self, caller: str, key: str) -> idempotency.Claim:
        """Claim `key` for `caller`'s request, or say it runs or what it answered.
        Every few minutes a claim also sweeps keys past their retention."""
        now = time.monotonic()
        if now - self._idem_swept > 300:
            self._idem_swept = now
            asyncio.get_running_loop().create_task(self._sweep_idempotency())
        return await self._svc.db.write(
            idempotency.claim, caller, key, self._idem_lease_s, self._idem_retention_s
        )

    @boundary
    async def idempotency_complete(
        self,
        caller: str,
        key: str,
        claim_id: str,
        fingerprint: bytes,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
    ) -> bool:
        return await self._svc.db.write(
            idempotency.complete, caller, key, claim_id, fingerprint, status, headers, body
        )

    @boundary
    async def idempotency_release(self, caller: str, key: str, claim_id: str) -> None:
        await self._svc.db.write(idempotency.release, caller, key, claim_id)

    async def _sweep_idempotency(self) -> None:
        try:
            gone = await self._svc.db.write(idempotency.sweep, self._idem_retention_s)
            if gone:
                log.info("swept %d expired idempotency keys", gone)
        except Exception as exc:  # the next claim tries again
            log.warning("idempotency key sweep failed: %r", exc)
