"""Auth models, shared by HTTP routes and deployment handles."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, EmailStr, Field, SecretStr

from deployments._kit.types import Id
from gateway.inputs import Input, Patch
from gateway.listing import ListQuery
from gateway.principal import Scope
from gateway.records import Record

Role = Literal["admin", "manager", "agent", "viewer"]



class LoginRequest(Input):
    email: EmailStr
    password: SecretStr = Field(min_length=1, max_length=1024)


class RefreshRequest(Input):
    refresh_token: str = Field(min_length=10, max_length=200)


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str


class UserCreate(Input):
    email: EmailStr
    name: str = Field(default="", max_length=200)
    password: SecretStr = Field(min_length=12, max_length=1024)
    role: Role = "agent"
    team_id: Id | None = None


class UserUpdate(Patch, creates=UserCreate):
    name: str | None = Field(default=None, max_length=200)
    password: SecretStr | None = Field(default=None, min_length=12, max_length=1024)
    role: Role | None = None
    is_active: bool | None = None
    team_id: Id | None = Field(default=None, description="null takes the user out of any team")


class UserRead(Record):
    id: Id
    email: str
    name: str
    role: Role
    team_id: Id | None
    is_active: bool
    version: int
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


class UserListQuery(ListQuery):
    role: Role | None = None
    is_active: bool | None = None
    team_id: Id | None = None

    query_params: ClassVar[dict[str, str]] = {
        **ListQuery.query_params,
        "role": "role",
        "is_active": "is_active",
        "team_id": "team_id",
    }


class ApiKeyCreate(Input):
    name: str = Field(min_length=1, max_length=100)
    permissions: list[str] = Field(min_length=1, max_length=100)
    expires_at: datetime | None = None


class ApiKeyRead(Record):
    id: Id
    user_id: Id
    name: str
    prefix: str
    permissions: list[str]
    expires_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret key. Shown once; store it now.")


class RoleRead(BaseModel):
    name: str
    description: str
    permissions: list[str]
    scopes: dict[str, Scope] = Field(
        description="Permissions this role limits to the caller's own (`own`) or team's"
        " (`team`) records; a permission not named reaches every record."
    )
    hidden_fields: dict[str, list[str]] = Field(
        description="Per record type, the fields this role sees as null."
    )


class RoleUpdate(Patch):
    """A role's record scopes and hidden fields; each map given replaces the role's."""

    scopes: dict[str, Scope] | None = Field(
        default=None, max_length=50,
        description="Permission -> `own` | `team`; a permission not named reaches every record.",
    )  # fmt: skip
    hidden_fields: dict[str, list[str]] | None = Field(
        default=None, max_length=20,
        description="Record type -> fields this role sees as null (customer, contact, lead:"
        " email, phone).",
    )  # fmt: skip


class TeamCreate(Input):
    name: str = Field(min_length=1, max_length=100)


class TeamRead(BaseModel):
    id: Id
    name: str
    created_at: datetime
    members: int = Field(default=0, description="Active users in the team.")


# -- saved views -------------------------------------------------------------------
ViewObject = Literal["customers", "deals", "orders", "leads", "campaigns", "tickets", "products"]
FilterValue = str | list[str]


class ViewCreate(Input):
    """A named list view: the list's filters as its query string spells them (a list
    filter's values as an array or `a,b`), its sort, and the columns a client shows."""

    object: ViewObject
    name: str = Field(min_length=1, max_length=100)
    filters: dict[str, FilterValue] = Field(
        default_factory=dict, max_length=30, examples=[{"tag[in]": ["vip"], "owner_id": "7"}]
    )
    sort: str | None = Field(default=None, max_length=64)
    columns: list[str] = Field(default_factory=list, max_length=50)
    shared: bool = Field(default=False, description="The owner's team may use it too.")


class ViewUpdate(Patch, creates=ViewCreate, nullable={"sort"}):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    filters: dict[str, FilterValue] | None = Field(default=None, max_length=30)
    sort: str | None = Field(default=None, max_length=64)
    columns: list[str] | None = Field(default=None, max_length=50)
    shared: bool | None = None


class ViewRead(Record):
    id: Id
    owner_id: Id
    object: ViewObject
    name: str
    filters: dict[str, str] = Field(description="As the list's query string spells them.")
    sort: str | None
    columns: list[str]
    shared: bool
    version: int
    created_at: datetime
    updated_at: datetime


class ViewListQuery(ListQuery):
    """The caller's views and those their team shares."""

    object: ViewObject | None = None
    sort: str = "name"
    sort_fields: ClassVar[dict[str, type]] = {"name": str, "created_at": datetime}
    query_params: ClassVar[dict[str, str]] = {**ListQuery.query_params, "object": "object"}
