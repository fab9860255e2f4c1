"""All SQL of the auth service (the unsharded `auth` database)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deployments._kit.sql import Params, Stale, keyset_page
from deployments.auth.schemas import (
    ApiKeyRead,
    RoleRead,
    TeamRead,
    UserListQuery,
    UserRead,
    ViewListQuery,
    ViewRead,
)
from gateway.listing import Order, Position, SavedQuery
from gateway.principal import Scope
from shards import ReadConn, WriteConn, single_statement

_USER = "id, email, name, role, team_id, is_active, version, created_at, updated_at, last_login_at"
_TEAM = "id, name, created_at"
_ROLE = "name, description, permissions, scopes, hidden_fields"
# Most users a team may hold: its members' ids travel in every member's access token.
TEAM_MAX_MEMBERS = 500
_KEY = "id, user_id, name, prefix, permissions, expires_at, created_at, last_used_at, revoked_at"


@dataclass(frozen=True)
class Reach:
    """What a user's role and team let their permissions reach, record by record:
    `Principal.scopes`, `.team` and `.hidden` (gateway/principal.py)."""

    scopes: dict[str, Scope]
    team: list[int]
    hidden: dict[str, list[str]]


@dataclass(frozen=True)
class Credentials:
    user_id: int
    password_hash: str
    role: str
    permissions: list[str]
    is_active: bool
    reach: Reach


@dataclass(frozen=True)
class KeyOwner:
    key_id: int
    user_id: int
    role: str
    key_permissions: list[str]
    role_permissions: list[str]
    reach: Reach


# The role's scopes and hidden fields and the user's active team mates, beside `u`
# (users) joined with `r` (roles).
_REACH = """r.scopes, r.hidden_fields,
    CASE WHEN u.team_id IS NULL THEN '{}'::bigint[]
         ELSE ARRAY(SELECT m.id FROM users m WHERE m.team_id = u.team_id AND m.is_active
                    ORDER BY m.id) END AS team"""


def _reach(row: Mapping[str, Any]) -> Reach:
    return Reach(dict(row["scopes"]), list(row["team"]), dict(row["hidden_fields"]))


def _credentials(row: Mapping[str, Any] | None) -> Credentials | None:
    if row is None:
        return None
    return Credentials(
        row["id"],
        row["password_hash"],
        row["role"],
        list(row["permissions"]),
        row["is_active"],
        _reach(row),
    )


# -- users ---------------------------------------------------------------------------
async def credentials_by_email(conn: ReadConn, email: str) -> Credentials | None:
    return _credentials(
        await conn.fetchrow(
            f"""SELECT u.id, u.password_hash, u.role, u.is_active, r.permissions, {_REACH}
                FROM users u JOIN roles r ON r.name = u.role
                WHERE lower(u.email) = lower($1)""",
            email,
        )
    )


async def credentials_by_id(conn: ReadConn, user_id: int) -> Credentials | None:
    return _credentials(
        await conn.fetchrow(
            f"""SELECT u.id, u.password_hash, u.role, u.is_active, r.permissions, {_REACH}
                FROM users u JOIN roles r ON r.name = u.role WHERE u.id = $1""",
            user_id,
        )
    )


async def create_user(
    conn: WriteConn, email: str, name: str, password_hash: str, role: str, team_id: int | None
) -> UserRead | TeamProblem:
    if team_id is not None and (problem := await _team_has_room(conn, team_id)):
        return problem
    row = await conn.fetchrow(
        f"""INSERT INTO users (email, name, password_hash, role, team_id)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_USER}""",
        email,
        name,
        password_hash,
        role,
        team_id,
    )
    return UserRead.model_validate(dict(row))


@single_statement
async def get_user(conn: ReadConn, user_id: int) -> UserRead | None:
    row = await conn.fetchrow(f"SELECT {_USER} FROM users WHERE id = $1", user_id)
    return None if row is None else UserRead.model_validate(dict(row))


@dataclass(frozen=True)
class TeamProblem:
    """Why a user cannot join a team: it does not exist, or it is full."""

    message: str


async def _team_has_room(conn: WriteConn, team_id: int) -> TeamProblem | None:
    found = await conn.fetchval("SELECT id FROM teams WHERE id = $1 FOR UPDATE", team_id)
    if found is None:
        return TeamProblem(f"team {team_id} does not exist")
    members = await conn.fetchval("SELECT count(*) FROM users WHERE team_id = $1", team_id)
    if members >= TEAM_MAX_MEMBERS:
        return TeamProblem(f"team {team_id} is full ({TEAM_MAX_MEMBERS} members)")
    return None


@dataclass(frozen=True)
class UserChange:
    """A user as updated, and the users whose access tokens no longer tell the truth
    (their own role or state changed, or their team's members did)."""

    user: UserRead
    cut_off: list[int]


async def update_user(
    conn: WriteConn, user_id: int, changes: dict[str, Any], if_version: int | None
) -> UserChange | Stale | TeamProblem | None:
    before = await conn.fetchrow(
        "SELECT team_id, is_active FROM users WHERE id = $1 FOR UPDATE", user_id
    )
    if before is None:
        return None
    new_team = changes.get("team_id", before["team_id"])
    if new_team != before["team_id"] and new_team is not None:
        if problem := await _team_has_room(conn, new_team):
            return problem
    params = Params()
    sets = [f"{name} = {params(value)}" for name, value in changes.items()]
    sets += ["version = version + 1", "updated_at = now()"]
    where = [f"id = {params(user_id)}"]
    if if_version is not None:
        where.append(f"version = {params(if_version)}")
    row = await conn.fetchrow(
        f"UPDATE users SET {', '.join(sets)} WHERE {' AND '.join(where)} RETURNING {_USER}",
        *params.values,
    )
    if row is None:
        return Stale(await conn.fetchval("SELECT version FROM users WHERE id = $1", user_id))
    cut_off: set[int] = set()
    if changes.get("is_active") is False or "password_hash" in changes or "role" in changes:
        await revoke_user_sessions(conn, user_id)
        cut_off.add(user_id)
    if new_team != before["team_id"] or row["is_active"] != before["is_active"]:
        # Tokens list the team's members. The user's own token is wrong now; so are
        # those of the team they leave (or are in while deactivated), which would
        # still reach their records. A team they join reaches them from its members'
        # next token (within access_token_ttl_s): seeing less is not a leak.
        cut_off.add(user_id)
        if before["team_id"] is not None:
            cut_off.update(await team_members(conn, before["team_id"]))
    return UserChange(UserRead.model_validate(dict(row)), sorted(cut_off))


async def record_login(conn: WriteConn, user_id: int, new_hash: str | None) -> None:
    await conn.execute(
        "UPDATE users SET last_login_at = now(), password_hash = coalesce($2, password_hash)"
        " WHERE id = $1",
        user_id,
        new_hash,
    )


async def list_users(
    conn: ReadConn, query: UserListQuery, order: Order, position: Position | None
) -> list[UserRead]:
    params = Params()
    where = ["true"]
    if query.role is not None:
        where.append(f"role = {params(query.role)}")
    if query.is_active is not None:
        where.append(f"is_active = {params(query.is_active)}")
    if query.team_id is not None:
        where.append(f"team_id = {params(query.team_id)}")
    sql = keyset_page("users", _USER, where, "created_at", order, position, query.limit, params)
    rows = await conn.fetch(sql, *params.values)
    return [UserRead.model_validate(dict(r)) for r in rows]


async def list_roles(conn: ReadConn) -> list[RoleRead]:
    rows = await conn.fetch(f"SELECT {_ROLE} FROM roles ORDER BY name")
    return [RoleRead.model_validate(dict(r)) for r in rows]


async def role_permissions(conn: ReadConn, name: str) -> frozenset[str] | None:
    found = await conn.fetchval("SELECT permissions FROM roles WHERE name = $1", name)
    return None if found is None else frozenset(found)


async def update_role(
    conn: WriteConn,
    name: str,
    scopes: dict[str, str] | None,
    hidden: dict[str, list[str]] | None,
) -> tuple[RoleRead, list[int]] | None:
    """The role with the maps given replaced, and the ids of its users when that changed
    it (their access tokens carry the old maps); no ids when it did not (the maps given
    are the role's already). None when there is no such role."""
    row = await conn.fetchrow(f"SELECT {_ROLE} FROM roles WHERE name = $1 FOR UPDATE", name)
    if row is None:
        return None
    before = RoleRead.model_validate(dict(row))
    if (scopes is None or scopes == before.scopes) and (
        hidden is None or hidden == before.hidden_fields
    ):
        return before, []
    row = await conn.fetchrow(
        f"""UPDATE roles SET scopes = COALESCE($2::jsonb, scopes),
                             hidden_fields = COALESCE($3::jsonb, hidden_fields)
            WHERE name = $1 RETURNING {_ROLE}""",
        name, scopes, hidden,
    )  # fmt: skip
    users = await conn.fetch("SELECT id FROM users WHERE role = $1", name)
    return RoleRead.model_validate(dict(row)), [u["id"] for u in users]


# -- teams ---------------------------------------------------------------------------
async def create_team(conn: WriteConn, name: str) -> TeamRead | None:
    """The new team; None when the name is taken (names are unique, case aside)."""
    row = await conn.fetchrow(
        f"""INSERT INTO teams (name) VALUES ($1)
            ON CONFLICT (lower(name)) DO NOTHING RETURNING {_TEAM}""",
        name,
    )
    return None if row is None else TeamRead.model_validate(dict(row))


async def team_members(conn: ReadConn, team_id: int) -> list[int]:
    return [r["id"] for r in await conn.fetch("SELECT id FROM users WHERE team_id = $1", team_id)]


async def list_teams(conn: ReadConn) -> list[TeamRead]:
    rows = await conn.fetch(
        f"""SELECT {", ".join("t." + c for c in _TEAM.split(", "))},
                   (SELECT count(*) FROM users u WHERE u.team_id = t.id AND u.is_active) AS members
            FROM teams t ORDER BY t.name"""
    )
    return [TeamRead.model_validate(dict(r)) for r in rows]


async def revoke_user_sessions(conn: WriteConn, user_id: int) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
    )


# -- refresh tokens --------------------------------------------------------------------
async def store_refresh_token(
    conn: WriteConn, token_hash: bytes, user_id: int, family_id: uuid.UUID, ttl_s: int
) -> None:
    await conn.execute(
        """INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))""",
        token_hash,
        family_id,
        user_id,
        ttl_s,
    )


@dataclass(frozen=True)
class RefreshOutcome:
    """`user_id` and `family_id` when the token was valid and is now spent; `reused`
    when an already spent token came back (its whole family, `family_id`, is then
    revoked)."""

    user_id: int | None = None
    family_id: uuid.UUID | None = None
    reused: bool = False


async def spend_refresh_token(conn: WriteConn, token_hash: bytes) -> RefreshOutcome:
    row = await conn.fetchrow(
        """SELECT id, user_id, family_id, used_at, revoked_at, expires_at < now() AS expired
           FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE""",
        token_hash,
    )
    if row is None or row["expired"]:
        return RefreshOutcome()
    if row["used_at"] is not None or row["revoked_at"] is not None:
        # A spent token presented again: someone holds a copy. Revoke the family.
        await revoke_family(conn, row["family_id"])
        return RefreshOutcome(family_id=row["family_id"], reused=row["used_at"] is not None)
    await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", row["id"])
    return RefreshOutcome(user_id=row["user_id"], family_id=row["family_id"])


async def revoke_family(conn: WriteConn, family_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family_id,
    )


async def revoke_refresh_token(conn: WriteConn, token_hash: bytes) -> uuid.UUID | None:
    """Revoke the token's family; which one (None: no such token)."""
    family: uuid.UUID | None = await conn.fetchval(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1", token_hash
    )
    if family is not None:
        await revoke_family(conn, family)
    return family


# -- API keys ------------------------------------------------------------------------
async def create_api_key(
    conn: WriteConn,
    user_id: int,
    name: str,
    prefix: str,
    secret_hash: bytes,
    permissions: list[str],
    expires_at: datetime | None,
) -> ApiKeyRead:
    row = await conn.fetchrow(
        f"""INSERT INTO api_keys (user_id, name, prefix, secret_hash, permissions, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_KEY}""",
        user_id,
        name,
        prefix,
        secret_hash,
        permissions,
        expires_at,
    )
    return ApiKeyRead.model_validate(dict(row))


async def list_api_keys(conn: ReadConn, user_id: int | None) -> list[ApiKeyRead]:
    if user_id is None:
        rows = await conn.fetch(f"SELECT {_KEY} FROM api_keys ORDER BY id")
    else:
        rows = await conn.fetch(
            f"SELECT {_KEY} FROM api_keys WHERE user_id = $1 ORDER BY id", user_id
        )
    return [ApiKeyRead.model_validate(dict(r)) for r in rows]


async def get_api_key(conn: ReadConn, key_id: int) -> ApiKeyRead | None:
    row = await conn.fetchrow(f"SELECT {_KEY} FROM api_keys WHERE id = $1", key_id)
    return None if row is None else ApiKeyRead.model_validate(dict(row))


async def revoke_api_key(conn: WriteConn, key_id: int) -> ApiKeyRead | None:
    row = await conn.fetchrow(
        f"""UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
            RETURNING {_KEY}""",
        key_id,
    )
    return None if row is None else ApiKeyRead.model_validate(dict(row))


async def use_api_key(conn: WriteConn, prefix: str, secret_hash: bytes) -> KeyOwner | None:
    """The live key matching prefix and secret hash, with its owner's role; marks it
    used. (Comparing sha256 digests in SQL leaks nothing about the secret itself.)"""
    row = await conn.fetchrow(
        """UPDATE api_keys k SET last_used_at = now()
           FROM users u JOIN roles r ON r.name = u.role
           WHERE k.prefix = $1 AND k.secret_hash = $2 AND u.id = k.user_id AND u.is_active
             AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())
           RETURNING k.id, k.user_id, u.role, k.permissions, r.permissions AS role_permissions,
                     """
        + _REACH,
        prefix,
        secret_hash,
    )
    if row is None:
        return None
    return KeyOwner(
        row["id"],
        row["user_id"],
        row["role"],
        list(row["permissions"]),
        list(row["role_permissions"]),
        _reach(row),
    )


# -- saved views ------------------------------------------------------------------------
_VIEW = (
    "id, owner_id, object, name, filters, sort, columns, shared, version, created_at, updated_at"
)


def _view(row: Any) -> ViewRead:
    data = dict(row)
    data["filters"] = dict(data["filters"])  # [[name, value], ...] as stored
    return ViewRead.model_validate(data)


async def create_view(
    conn: WriteConn,
    owner_id: int,
    object_name: str,
    name: str,
    filters: list[tuple[str, str]],
    sort: str | None,
    columns: list[str],
    shared: bool,
) -> ViewRead | None:
    """The new view; None when the owner has a view of that object by that name."""
    row = await conn.fetchrow(
        f"""INSERT INTO saved_views (owner_id, object, name, filters, sort, columns, shared)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (owner_id, object, lower(name)) DO NOTHING RETURNING {_VIEW}""",
        owner_id, object_name, name, [list(p) for p in filters], sort, columns, shared,
    )  # fmt: skip
    return None if row is None else _view(row)


@single_statement
async def get_view(conn: ReadConn, view_id: int) -> ViewRead | None:
    row = await conn.fetchrow(f"SELECT {_VIEW} FROM saved_views WHERE id = $1", view_id)
    return None if row is None else _view(row)


@single_statement
async def saved_query(conn: ReadConn, view_id: int) -> SavedQuery | None:
    """What a list route needs of a view (deployments/auth/saved.py)."""
    row = await conn.fetchrow(
        "SELECT id, object, owner_id, shared, filters, sort FROM saved_views WHERE id = $1",
        view_id,
    )
    if row is None:
        return None
    return SavedQuery(
        id=row["id"], object=row["object"], owner_id=row["owner_id"], shared=row["shared"],
        filters=tuple((str(k), str(v)) for k, v in row["filters"]), sort=row["sort"],
    )  # fmt: skip


async def list_views(
    conn: ReadConn,
    owner_id: int,
    team: list[int],
    query: ViewListQuery,
    order: Order,
    position: Position | None,
) -> list[ViewRead]:
    """The owner's views and those the members of their team share."""
    params = Params()
    where = [f"(owner_id = {params(owner_id)} OR (shared AND owner_id = ANY({params(team)})))"]
    if query.object is not None:
        where.append(f"object = {params(query.object)}")
    sql = keyset_page("saved_views", _VIEW, where, order.field, order, position, query.limit,
                      params)  # fmt: skip
    return [_view(r) for r in await conn.fetch(sql, *params.values)]


async def update_view(
    conn: WriteConn, view_id: int, owner_id: int, changes: dict[str, Any], if_version: int | None
) -> ViewRead | Stale | None:
    """None when the owner has no such view."""
    params = Params()
    sets = [f"{name} = {params(value)}" for name, value in changes.items()]
    sets += ["version = version + 1", "updated_at = now()"]
    where = [f"id = {params(view_id)}", f"owner_id = {params(owner_id)}"]
    if if_version is not None:
        where.append(f"version = {params(if_version)}")
    row = await conn.fetchrow(
        f"UPDATE saved_views SET {', '.join(sets)} WHERE {' AND '.join(where)} RETURNING {_VIEW}",
        *params.values,
    )
    if row is not None:
        return _view(row)
    version = await conn.fetchval(
        "SELECT version FROM saved_views WHERE id = $1 AND owner_id = $2", view_id, owner_id
    )
    return None if version is None else Stale(version)


async def delete_view(
    conn: WriteConn, view_id: int, owner_id: int, if_version: int | None
) -> ViewRead | Stale | None:
    row = await conn.fetchrow(
        f"""DELETE FROM saved_views WHERE id = $1 AND owner_id = $2
               AND ($3::integer IS NULL OR version = $3) RETURNING {_VIEW}""",
        view_id, owner_id, if_version,
    )  # fmt: skip
    if row is not None:
        return _view(row)
    version = await conn.fetchval(
        "SELECT version FROM saved_views WHERE id = $1 AND owner_id = $2", view_id, owner_id
    )
    return None if version is None else Stale(version)
