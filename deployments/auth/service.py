"""Auth logic: login, rotating refresh tokens, users, API keys.
No SQL here (repo.py) and no Ray or FastAPI (deployment.py)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from redis.exceptions import RedisError

from cluster.settings import Settings
from deployments._kit.boundary import remote
from deployments._kit.custom_fields import (
    HOLDERS,
    FieldCreate,
    FieldDefinition,
    FieldListQuery,
    FieldPurged,
    FieldUpdate,
    stored,
)
from deployments._kit.sql import Stale, written
from deployments.auth import fields, passwords, repo, roles, views
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
    ViewCreate,
    ViewListQuery,
    ViewRead,
    ViewUpdate,
)
from gateway import tokens
from gateway.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Unauthenticated,
    Unavailable,
    Validation,
)
from gateway.listing import (
    Page,
    decode_cursor,
    may_use,
    merge_pages,
    row_key,
    validate_sort,
)
from gateway.principal import Principal
from shards.client import Database

_BAD_LOGIN = "invalid e-mail or password"
log = logging.getLogger("nextflow.service")


class AuthService:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        redis: Any = None,
        holders: dict[str, Any] | None = None,
    ) -> None:
        """`holders`: deployment handles on the applications that keep records with
        custom fields (customer, sales, marketing, support, product), for purges."""
        self.db = db
        self.holders = holders or {}
        self._settings = settings
        self._redis = redis  # where access-token cutoffs go (tokens.cutoff_key)
        self.jwt = tokens.JwtConfig(
            secret=settings.jwt_secret.get_secret_value(),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_s=settings.access_token_ttl_s,
        )

    # -- sessions --------------------------------------------------------------------
    async def login(self, request: LoginRequest) -> TokenPair:
        found = await self.db.read_primary(repo.credentials_by_email, request.email)
        plain = request.password.get_secret_value()
        # argon2 is deliberately slow CPU work: keep it off the event loop.
        ok = await asyncio.to_thread(
            passwords.verify_password, found.password_hash if found else None, plain
        )
        if found is None or not ok or not found.is_active:
            raise Unauthenticated(_BAD_LOGIN)
        rehash = None
        if passwords.needs_rehash(found.password_hash):
            rehash = await asyncio.to_thread(passwords.hash_password, plain)
        await self.db.write(repo.record_login, found.user_id, rehash)
        return await self._issue(found, family_id=uuid.uuid4())  # a new sign-in

    async def refresh(self, refresh_token: str) -> TokenPair:
        outcome = await self.db.write(repo.spend_refresh_token, tokens.digest(refresh_token))
        if outcome.user_id is None:
            if outcome.family_id is not None:  # a spent token came back: a copy is out
                await self._revoke_session(outcome.family_id)
            detail = (
                "refresh token reused; all sessions of this login were revoked"
                if (outcome.reused)
                else "invalid or expired refresh token"
            )
            raise Unauthenticated(detail)
        found = await self.db.read_primary(repo.credentials_by_id, outcome.user_id)
        if found is None or not found.is_active or outcome.family_id is None:
            raise Unauthenticated("invalid or expired refresh token")
        return await self._issue(found, family_id=outcome.family_id)

    async def logout(self, refresh_token: str, access_token: str | None = None) -> None:
        """Revoke the refresh token's family, the access tokens issued to it, and, when
        given, the access token in hand (refused by the gateway from now until they
        would have expired)."""
        family = await self.db.write(repo.revoke_refresh_token, tokens.digest(refresh_token))
        if family is not None:
            await self._revoke_session(family)
        if access_token is None:
            return
        try:
            verified = tokens.verify_access_token_claims(self.jwt, access_token)
        except Unauthenticated:
            return  # expired or not ours: nothing to revoke
        left = verified.expires - int(time.time())
        if left > 0:
            await self._mark_revoked(verified.token_id, left + 1)

    async def _revoke_session(self, family_id: uuid.UUID) -> None:
        """Refuse every access token issued to this sign-in (refresh-token family) until
        the last of them would have expired."""
        await self._mark_revoked(tokens.session_mark(family_id.hex), self.jwt.ttl_s + 1)

    async def _mark_revoked(self, token_id: str, ttl_s: int) -> None:
        """Set `tokens.revoked_key(token_id)` for `ttl_s`: the gateway's admission check
        (one Redis round trip it makes anyway) refuses what it names from now on. Without
        Redis what it names runs out by itself (access tokens within access_token_ttl_s;
        a cached API key within api_key_cache_ttl_s)."""
        if self._redis is None:
            return
        try:
            await self._redis.set(tokens.revoked_key(token_id), 1, ex=ttl_s)
        except (RedisError, OSError) as exc:
            log.warning("could not mark %s revoked: %s", token_id, exc)

    async def _issue(self, who: repo.Credentials, family_id: uuid.UUID) -> TokenPair:
        refresh = tokens.new_refresh_token()
        await self.db.write(
            repo.store_refresh_token,
            tokens.digest(refresh),
            who.user_id,
            family_id,
            self._settings.refresh_token_ttl_s,
        )
        access = tokens.issue_access_token(
            self.jwt, who.user_id, who.role, who.permissions,
            who.reach.scopes, who.reach.team, who.reach.hidden, family_id.hex,
        )  # fmt: skip
        return TokenPair(access_token=access, expires_in=self.jwt.ttl_s, refresh_token=refresh)

    # -- users -----------------------------------------------------------------------
    async def create_user(self, principal: Principal, data: UserCreate) -> UserRead:
        principal.require("user:write")
        hashed = await asyncio.to_thread(passwords.hash_password, data.password.get_secret_value())
        created = await self.db.write(
            repo.create_user, str(data.email), data.name, hashed, data.role, data.team_id
        )
        if isinstance(created, repo.TeamProblem):
            raise Validation(created.message, [{"field": "team_id", "message": created.message}])
        # Team mates reach the newcomer's records from their next access token.
        return created

    async def get_user(self, principal: Principal, user_id: int) -> UserRead:
        if user_id != principal.user_id:
            principal.require("user:read")
        found = await self.db.read(repo.get_user, user_id)
        if found is None:
            raise NotFound(f"user {user_id} not found")
        return found

    async def list_users(self, principal: Principal, query: UserListQuery) -> Page[UserRead]:
        principal.require("user:read")
        order = validate_sort(query)
        rows = await self.db.read(repo.list_users, query, order, decode_cursor(query))
        items, cursor = merge_pages([rows], lambda u: (u.created_at, u.id), order, query.limit)
        return Page[UserRead](data=items, next_cursor=cursor)

    async def update_user(
        self, principal: Principal, user_id: int, data: UserUpdate, if_version: int | None = None
    ) -> UserRead:
        principal.require("user:write")
        changes = data.model_dump(exclude_unset=True, exclude={"password"})
        if None in (changes.get("role", ""), changes.get("is_active", ""), changes.get("name", "")):
            raise Validation("fields cannot be null", [{"field": "body", "message": "null given"}])
        if user_id == principal.user_id and (
            changes.get("is_active") is False or changes.get("role", "admin") != "admin"
        ):
            raise Validation(
                "you cannot demote or deactivate yourself",
                [{"field": "role", "message": "ask another admin"}],
            )
        if data.password is not None:
            plain = data.password.get_secret_value()
            changes["password_hash"] = await asyncio.to_thread(passwords.hash_password, plain)
        outcome = await self.db.write(repo.update_user, user_id, changes, if_version)
        if outcome is None:
            raise NotFound(f"user {user_id} not found")
        if isinstance(outcome, Stale):
            raise PreconditionFailed(f"user {user_id} is at version {outcome.current_version}")
        if isinstance(outcome, repo.TeamProblem):
            raise Validation(outcome.message, [{"field": "team_id", "message": outcome.message}])
        # Refresh tokens were revoked with a role, password or state change; access
        # tokens already issued stop now too (the gateway refuses those issued before
        # the cutoff), and so do those of team mates whose team changed.
        await self._cut_off_access_tokens(*outcome.cut_off)
        return outcome.user

    async def _cut_off_access_tokens(self, *user_ids: int) -> None:
        if self._redis is None or not user_ids:
            return
        cutoff = round(time.time(), 3)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id in user_ids:
                    pipe.set(
                        tokens.cutoff_key(user_id),
                        cutoff,
                        ex=self._settings.access_token_ttl_s + 60,
                    )
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # Without Redis the tokens run out by themselves (access_token_ttl_s).
            log.warning("could not cut off access tokens of users %s: %s", user_ids, exc)

    async def deactivate_user(
        self, principal: Principal, user_id: int, if_version: int | None = None
    ) -> UserRead:
        return await self.update_user(principal, user_id, UserUpdate(is_active=False), if_version)

    async def me(self, principal: Principal) -> UserRead:
        """The caller's own user, from the primary: a user an admin has just made signs
        in and asks at once, before a replica may have replayed the create (the
        admin's write, not the caller's: no read-after token of theirs covers it)."""
        found = await self.db.read_primary(repo.get_user, principal.user_id)
        if found is None:
            raise NotFound(f"user {principal.user_id} not found")
        return found

    async def roles(self, principal: Principal) -> list[RoleRead]:
        principal.require("user:read")
        return await self.db.read(repo.list_roles)

    async def update_role(self, principal: Principal, name: str, data: RoleUpdate) -> RoleRead:
        """Replace a role's record scopes and/or hidden fields (`roles.problems` says
        what they may be). Every access token of the role's users is cut off at once:
        they carry the old scopes, and a narrowed scope must not wait for them to run
        out; API keys take the role's once an ingress checks them again (at most
        `api_key_cache_ttl_s` later)."""
        principal.require("role:write")
        permissions = await self.db.read_primary(repo.role_permissions, name)
        if permissions is None:
            raise NotFound(f"role {name!r} not found")
        errors = roles.problems(permissions, data.scopes, data.hidden_fields)
        if errors:
            raise Validation("the role cannot take these scopes or hidden fields", errors)
        hidden = None
        if data.hidden_fields is not None:
            hidden = {k: sorted(set(v)) for k, v in data.hidden_fields.items() if v}
        scopes: dict[str, str] | None = None if data.scopes is None else dict(data.scopes)
        updated = await self.db.write(repo.update_role, name, scopes, hidden)
        if updated is None:
            raise NotFound(f"role {name!r} not found")
        role, users = updated
        await self._cut_off_access_tokens(*users)
        return role

    # -- teams -----------------------------------------------------------------------
    async def create_team(self, principal: Principal, data: TeamCreate) -> TeamRead:
        principal.require("team:write")
        created = await self.db.write(repo.create_team, data.name)
        if created is None:
            raise Conflict(f"a team named {data.name!r} exists")
        return created

    async def list_teams(self, principal: Principal) -> list[TeamRead]:
        principal.require("team:read")
        return await self.db.read(repo.list_teams)

    # -- saved views -----------------------------------------------------------------
    async def create_view(self, principal: Principal, data: ViewCreate) -> ViewRead:
        """A view of the caller's (any signed-in caller may keep views: a view holds
        filters, and the list still shows only what the caller may read)."""
        filters = views.stored_filters(data.object, data.filters, data.sort)
        columns = views.check_columns(data.object, data.columns)
        made = await self.db.write(
            repo.create_view, principal.user_id, data.object, data.name, filters, data.sort,
            columns, data.shared,
        )  # fmt: skip
        if made is None:
            raise Conflict(
                f"you have a view of {data.object} named {data.name!r}",
                [{"field": "name", "message": "taken by another of your views"}],
            )
        return made

    async def list_views(self, principal: Principal, query: ViewListQuery) -> Page[ViewRead]:
        """The caller's views and those the members of their team share."""
        order = validate_sort(query)
        rows = await self.db.read(
            repo.list_views, principal.user_id, sorted(principal.team), query, order,
            decode_cursor(query),
        )  # fmt: skip
        items, cursor = merge_pages([rows], row_key(order.field), order, query.limit)
        return Page[ViewRead](data=items, next_cursor=cursor)

    async def get_view(self, principal: Principal, view_id: int) -> ViewRead:
        found = await self.db.read(repo.get_view, view_id)
        if found is None or not may_use(
            found.owner_id, found.shared, principal.user_id, principal.team
        ):
            raise NotFound(f"view {view_id} not found")
        return found

    async def update_view(
        self, principal: Principal, view_id: int, data: ViewUpdate, if_version: int | None
    ) -> ViewRead:
        """Only its owner changes a view (its team may use a shared one)."""
        current = await self._own_view(principal, view_id)
        changes = data.model_dump(exclude_unset=True)
        if "filters" in changes or "sort" in changes:
            filters = views.stored_filters(
                current.object, changes.get("filters", current.filters),
                changes.get("sort", current.sort),
            )  # fmt: skip
            if "filters" in changes:
                changes["filters"] = [list(p) for p in filters]
        if "columns" in changes:
            changes["columns"] = views.check_columns(current.object, changes["columns"])
        outcome = await self.db.write(
            repo.update_view, view_id, principal.user_id, changes, if_version
        )
        return written(outcome, "view", view_id)

    async def delete_view(
        self, principal: Principal, view_id: int, if_version: int | None
    ) -> ViewRead:
        await self._own_view(principal, view_id)
        outcome = await self.db.write(repo.delete_view, view_id, principal.user_id, if_version)
        return written(outcome, "view", view_id)

    async def _own_view(self, principal: Principal, view_id: int) -> ViewRead:
        current = await self.get_view(principal, view_id)
        if current.owner_id != principal.user_id:
            raise Forbidden(f"view {view_id} is shared with you; only its owner changes it")
        return current

    # -- custom fields ----------------------------------------------------------------
    async def create_field(self, principal: Principal, data: FieldCreate) -> FieldDefinition:
        """A custom field of an object (admins: `field:write`)."""
        principal.require("field:write")
        values = data.model_dump(mode="json")
        values["default"] = _stored_default(data.type, values["options"], data.default)
        made = await self.db.write(fields.create_field, values, principal.user_id)
        if made is None:
            raise Conflict(
                f"{data.object} have a field {data.key!r} (a deleted one keeps its key)",
                [{"field": "key", "message": "taken"}],
            )
        return made

    async def get_field(self, principal: Principal, field_id: int) -> FieldDefinition:
        found = await self.db.read(fields.get_field, field_id)
        if found is None:
            raise NotFound(f"custom field {field_id} not found")
        return found

    async def list_fields(
        self, principal: Principal, query: FieldListQuery
    ) -> Page[FieldDefinition]:
        """Definitions (every signed-in caller reads them: clients build forms)."""
        order = validate_sort(query)
        rows = await self.db.read(fields.list_fields, query, order, decode_cursor(query))
        items, cursor = merge_pages([rows], row_key(order.field), order, query.limit)
        return Page[FieldDefinition](data=items, next_cursor=cursor)

    async def update_field(
        self, principal: Principal, field_id: int, data: FieldUpdate, if_version: int | None
    ) -> FieldDefinition:
        """Label, description, required, default, options; key and type stay. Options
        may be added or relabelled, never removed (records may hold them)."""
        principal.require("field:write")
        current = await self.get_field(principal, field_id)
        changes = data.model_dump(mode="json", exclude_unset=True)
        if "options" in changes:
            kept = {o["value"] for o in changes["options"]}
            gone = [o["value"] for o in current.options if o["value"] not in kept]
            if current.type not in ("single_select", "multi_select"):
                raise Validation(
                    "only select fields have options",
                    [{"field": "options", "message": f"a {current.type} field has none"}],
                )
            if gone or len(kept) != len(changes["options"]):
                message = f"keeps {', '.join(gone)}" if gone else "values are unique"
                raise Validation(
                    "options are added or relabelled, never removed",
                    [{"field": "options", "message": message}],
                )
        if changes.get("default") is not None:
            options = changes.get("options", current.options)
            changes["default"] = _stored_default(current.type, options, data.default)
        outcome = await self.db.write(fields.update_field, field_id, changes, if_version)
        return written(outcome, "custom field", field_id)

    async def delete_field(
        self, principal: Principal, field_id: int, if_version: int | None
    ) -> FieldDefinition:
        """Hide a field: its values stay stored, unseen and unwritable, until it is
        restored (its key is never given to another field)."""
        principal.require("field:write")
        outcome = await self.db.write(fields.set_deleted, field_id, True, if_version)
        return written(outcome, "custom field", field_id)

    async def purge_field(self, principal: Principal, field_id: int) -> FieldPurged:
        """Remove a deleted field's values from every record of its object (through the
        application that keeps them; one pass over its table on each server). It
        stays deleted, its key reserved; a repeat finds nothing left to remove."""
        principal.require("field:write")
        field = await self.get_field(principal, field_id)
        if not field.deleted:
            raise Conflict(
                f"custom field {field_id} is live: delete it first (its values are hidden "
                "from then on; a purge removes them)"
            )
        app, _ = HOLDERS[field.object]
        holder = self.holders.get(app)
        if holder is None:
            raise Unavailable(f"the {app} service is not available")
        records = await remote(
            holder.purge_custom_field.remote(principal, field.object, field.key)
        )
        marked = await self.db.write(fields.mark_purged, field_id)
        if marked is None:  # restored meanwhile: its values are gone all the same
            raise Conflict(f"custom field {field_id} was restored during the purge")
        return FieldPurged(field=marked, records=records)

    async def restore_field(self, principal: Principal, field_id: int) -> FieldDefinition:
        principal.require("field:write")
        outcome = await self.db.write(fields.set_deleted, field_id, False, None)
        return written(outcome, "custom field", field_id)

    # -- API keys --------------------------------------------------------------------
    async def create_api_key(self, principal: Principal, data: ApiKeyCreate) -> ApiKeyCreated:
        principal.require("api_key:write")
        if principal.kind != "user":
            raise Forbidden("API keys cannot create API keys; sign in as a user")
        beyond = sorted(set(data.permissions) - principal.permissions)
        if beyond:
            raise Validation(
                "an API key cannot hold permissions its owner lacks",
                [{"field": "permissions", "message": f"not yours to grant: {', '.join(beyond)}"}],
            )
        key = tokens.new_api_key()
        stored = await self.db.write(
            repo.create_api_key,
            principal.user_id,
            data.name,
            key.prefix,
            key.secret_hash,
            sorted(set(data.permissions)),
            data.expires_at,
        )
        return ApiKeyCreated(**stored.model_dump(), key=key.plaintext)

    async def list_api_keys(self, principal: Principal) -> list[ApiKeyRead]:
        principal.require("api_key:read")
        owner = None if principal.can("api_key:admin") else principal.user_id
        return await self.db.read(repo.list_api_keys, owner)

    async def revoke_api_key(self, principal: Principal, key_id: int) -> ApiKeyRead:
        principal.require("api_key:write")
        found = await self.db.read(repo.get_api_key, key_id)
        if found is None or (
            found.user_id != principal.user_id and not principal.can("api_key:admin")
        ):
            raise NotFound(f"API key {key_id} not found")
        revoked = await self.db.write(repo.revoke_api_key, key_id)
        if revoked is None:
            raise NotFound(f"API key {key_id} not found")
        # Ingresses cache a checked key (`keys.ApiKeyCache`): the mark refuses it at once.
        ttl = int(self._settings.api_key_cache_ttl_s * 2 + 60)
        await self._mark_revoked(tokens.api_key_mark(key_id), ttl)
        return revoked


def _stored_default(kind: str, options: list[dict[str, str]], value: Any) -> Any:
    """A definition's default in its type's stored form (a 422 on `default`)."""
    if value is None:
        return None
    shape = FieldDefinition.model_construct(type=kind, options=options)
    try:
        return stored(shape, value)
    except ValueError as exc:
        raise Validation(
            "the default is not a value of the field",
            [{"field": "default", "message": f"must be {exc}"}],
        ) from None
