"""The `api` application at `/`: what no single service answers. The merged OpenAPI
document of every application (`/openapi.json`, `/docs`), the whole API's readiness
(`/ready` asks every application), and the few views that compose several services
through their deployment handles (a customer's overview). Requests for a service go
straight to its own application; nothing here forwards them.
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from ray import serve
from ray.serve import Application
from starlette.responses import Response

from cluster.settings import get_settings
from deployments._kit.ingress import APPS, ServiceIngress, app_handle
from deployments.ai import routes as ai_routes
from deployments.analytics import routes as analytics_routes
from deployments.auth import routes as auth_routes
from deployments.customer import routes as customer_routes
from deployments.customer.activities.schemas import ActivityListQuery, ActivityRead
from deployments.customer.schemas import ContactRead, CustomerRead
from deployments.file import routes as file_routes
from deployments.integration import routes as integration_routes
from deployments.marketing import routes as marketing_routes
from deployments.notification import routes as notification_routes
from deployments.product import routes as product_routes
from deployments.sales import routes as sales_routes
from deployments.sales.schemas import DealListQuery, DealRead
from deployments.support import routes as support_routes
from deployments.support.schemas import TicketListQuery, TicketRead
from deployments.webhooks import routes as webhook_routes
from gateway.context import CurrentPrincipal, RecordId, json, service
from gateway.errors import CATALOGUE, PROBLEM_BASE, NotFound
from gateway.listing import ListQuery, Page
from gateway.openapi import PUBLIC as PUBLIC_OPERATION
from gateway.openapi import finish, operation_id
from gateway.pipeline import Ready
from gateway.principal import Principal
from shards.client import read_shard_map
from shards.manager import manager_handle

# Each application's prefix and routes: the merged document, and the one list of what
# the ingress serves (serve_config.yaml gives the same prefixes; a test holds them equal).
PREFIXES: dict[str, tuple[str, ModuleType]] = {
    "auth": ("/v1/auth", auth_routes),
    "customer": ("/v1/customers", customer_routes),
    "product": ("/v1/products", product_routes),
    "sales": ("/v1/sales", sales_routes),
    "marketing": ("/v1/marketing", marketing_routes),
    "support": ("/v1/support", support_routes),
    "notification": ("/v1/notifications", notification_routes),
    "file": ("/v1/files", file_routes),
    "integration": ("/v1/integration", integration_routes),
    "webhooks": ("/v1/webhooks", webhook_routes),
    "analytics": ("/v1/analytics", analytics_routes),
    "ai": ("/v1/ai", ai_routes),
}

# The only operations that answer without credentials (a test proves every other
# route of every application refuses with 401). Every application also has its own
# public `GET <prefix>/health` and `GET <prefix>/ready`.
PUBLIC = frozenset(
    {
        ("POST", "/v1/auth/login"),
        ("POST", "/v1/auth/refresh"),
        ("POST", "/v1/auth/logout"),
        ("POST", "/v1/marketing/capture/{form_key}"),
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
        ("GET", "/errors"),
        ("GET", "/errors/{slug}"),
    }
    | {
        (m, f"{prefix}{p}")
        for prefix, _ in PREFIXES.values()
        for m, p in (("GET", "/health"), ("GET", "/ready"))
    }  # fmt: skip
)

OVERVIEW_ITEMS = 10


def routers_of(module: ModuleType) -> list[APIRouter]:
    """A routes module's routers (`routers`, or its one `router`)."""
    found = getattr(module, "routers", None)
    return list(found) if found is not None else [module.router]


def merged_openapi(title: str = "NextFlow CRM API") -> dict[str, Any]:
    """One OpenAPI document for every application, each under its prefix."""
    whole = FastAPI(title=title, version="1.0", generate_unique_id_function=operation_id)
    for prefix, module in PREFIXES.values():
        for service_router in routers_of(module):
            whole.include_router(service_router, prefix=prefix)
    whole.include_router(router)
    document = get_openapi(
        title=title,
        version="1.0",
        description=(
            "NextFlow CRM. Every service has its own prefix (`/v1/customers`, "
            "`/v1/sales`, ...). Ids are 64-bit integers written as strings. Errors are "
            "RFC 9457 problem+json. Lists use cursor pages. Updates take `If-Match`."
        ),
        routes=whole.routes,
    )
    # An application's root route is its prefix itself (`POST /v1/customers`).
    document["paths"] = {path.rstrip("/") or "/": ops for path, ops in document["paths"].items()}
    return finish(document)


class CustomerOverview(BaseModel):
    """A customer with the first of its contacts, deals, tickets and activities (each
    list only when the caller may read it; activities newest first)."""

    customer: CustomerRead
    contacts: list[ContactRead] | None = None
    deals: list[DealRead] | None = None
    tickets: list[TicketRead] | None = None
    activities: list[ActivityRead] | None = None


class Overviews:
    """The views that compose services; each call below is a real Serve handle call."""

    async def customer(self, principal: Principal, customer_id: int) -> CustomerOverview:
        customers, sales, support = (
            app_handle("customer"),
            app_handle("sales"),
            app_handle("support"),
        )
        customer = await customers.get.remote(principal, customer_id)
        can = principal.can
        contacts, deals, tickets, activities = await asyncio.gather(
            _items(customers.list_contacts.remote(
                principal, customer_id, ListQuery(limit=OVERVIEW_ITEMS))
                if can("customer:read") else None),
            _items(sales.list_customer_deals.remote(
                principal, customer_id, DealListQuery(limit=OVERVIEW_ITEMS))
                if can("deal:read") else None),
            _items(support.list_for_customer.remote(
                principal, customer_id, TicketListQuery(limit=OVERVIEW_ITEMS))
                if can("ticket:read") else None),
            _items(customers.list_activities.remote(
                principal, customer_id, ActivityListQuery(limit=OVERVIEW_ITEMS))
                if can("activity:read") else None),
        )  # fmt: skip
        return CustomerOverview(
            customer=customer, contacts=contacts, deals=deals, tickets=tickets,
            activities=activities,
        )  # fmt: skip


async def _items(call: Any) -> list[Any] | None:
    if call is None:
        return None
    page: Page[Any] = await call
    return list(page.data)


Overview = Annotated[Overviews, Depends(service)]
router = APIRouter(tags=["overview"])


@router.get("/v1/overview/customers/{customer_id}", response_model=CustomerOverview)
async def customer_overview(
    customer_id: RecordId, principal: CurrentPrincipal, views: Overview
) -> Response:
    """A customer with its first contacts, deals, tickets and activities, composed from
    the customer, sales and support applications (those the caller may read); its
    whole history is `GET /v1/customers/{id}/timeline`."""
    return json(await views.customer(principal, customer_id))


class ProblemType(BaseModel):
    """What a problem `type` means (RFC 9457): the page a problem's `type` points at."""

    type: str
    status: int
    title: str
    description: str


def _problem_type(slug: str) -> ProblemType:
    status, title, description = CATALOGUE[slug]
    return ProblemType(
        type=PROBLEM_BASE + slug, status=status, title=title, description=description
    )


@router.get("/errors", response_model=Page[ProblemType], openapi_extra=PUBLIC_OPERATION)
async def list_problem_types() -> Response:
    """Every problem `type` the API answers with (docs/errors.md), as one page."""
    return json(Page[ProblemType](data=[_problem_type(slug) for slug in CATALOGUE]))


@router.get("/errors/{slug}", response_model=ProblemType, openapi_extra=PUBLIC_OPERATION)
async def get_problem_type(slug: Annotated[str, Path(max_length=64)]) -> Response:
    """The page a problem's `type` (`/errors/<slug>`) resolves to."""
    if slug not in CATALOGUE:
        raise NotFound(f"no problem type {slug!r} (GET /errors lists them)")
    return json(_problem_type(slug))


@serve.deployment(name="ApiGateway")
@serve.ingress()
class ApiApp(ServiceIngress):
    def __init__(self) -> None:
        self.open_ingress(
            Overviews(),
            title="NextFlow CRM API",
            routers=[router],
            ready={**{app: _ready_of(app) for app in APPS}, "standbys": standbys},
        )
        document = merged_openapi()
        self._api.openapi = lambda: document  # type: ignore[method-assign]

    async def check_health(self) -> None:
        """Liveness: this replica answers (the services have their own checks)."""

    async def ready(self) -> None:
        """Readiness of the whole API: every application's `ready` answers."""
        await asyncio.gather(*(_ready_of(app)() for app in APPS))


async def standbys() -> str:
    """'' when every shard server has a standby its manager finds usable; else which
    have none: readiness says "degraded" (the API serves, but a lost primary would
    take its shards' reads and writes with it)."""
    shard_map = await read_shard_map(get_settings())
    specs = [shard_map.servers[name] for name in shard_map.server_names()]
    found = await asyncio.gather(*(manager_handle(spec).stats.remote() for spec in specs))
    notes = []
    for stats in found:
        replicas: dict[str, Any] = stats["replicas"]
        if not replicas:
            notes.append(f"{stats['server']}: no standby")
        elif not any(r["healthy"] for r in replicas.values()):
            why = ", ".join(
                f"{name} " + ("unreachable or not replaying" if r["lag_s"] is None
                              else f"{r['lag_s']:.1f} s behind")
                for name, r in sorted(replicas.items())
            )  # fmt: skip
            notes.append(f"{stats['server']}: no usable standby ({why})")
    return "; ".join(notes)


def _ready_of(app: str) -> Ready:
    async def ready() -> None:
        await app_handle(app).ready.remote()

    return ready


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The application `serve_config.yaml` names (`deployments.api.app:build_app`)."""
    return ApiApp.bind()  # type: ignore[attr-defined, no-any-return]
