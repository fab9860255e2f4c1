"""The gRPC API (proto/nextflow/v1) with a real grpcio client against the deployed
app, through the stack's ingress (HAProxy by default) on its gRPC port: CRUD of
customers, deals and tickets, every error code, auth, idempotency, versions, and
records crossing between gRPC and HTTP."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cluster.settings import Settings
from nextflow.v1 import (
    common_pb2,
    customers_pb2,
    customers_pb2_grpc,
    deals_pb2,
    deals_pb2_grpc,
    tickets_pb2,
    tickets_pb2_grpc,
)
from tests.e2e.conftest import make_user

pytestmark = pytest.mark.e2e

Metadata = list[tuple[str, str]]


# Each service answers in its own application; Serve routes by the `application`
# metadata. The tests write "customer"; deal and ticket calls go to theirs.
APPLICATION_OF = {"nextflow.v1.DealService": "sales", "nextflow.v1.TicketService": "support"}


class _RouteByService(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        service = details.method.strip("/").partition("/")[0]
        app = APPLICATION_OF.get(service)
        if app is not None and details.metadata:
            metadata = [
                (k, app if (k, v) == ("application", "customer") else v)
                for k, v in details.metadata
            ]
            details = details._replace(metadata=metadata)
        return continuation(details, request)


@pytest.fixture(scope="module")
def channel(serve_app: Settings) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(serve_app.serve_grpc_target) as ch:
        grpc.channel_ready_future(ch).result(timeout=60)
        yield grpc.intercept_channel(ch, _RouteByService())


@pytest.fixture(scope="module")
def customers(channel: grpc.Channel) -> customers_pb2_grpc.CustomerServiceStub:
    return customers_pb2_grpc.CustomerServiceStub(channel)


@pytest.fixture(scope="module")
def deals(channel: grpc.Channel) -> deals_pb2_grpc.DealServiceStub:
    return deals_pb2_grpc.DealServiceStub(channel)


@pytest.fixture(scope="module")
def tickets(channel: grpc.Channel) -> tickets_pb2_grpc.TicketServiceStub:
    return tickets_pb2_grpc.TicketServiceStub(channel)


def md(headers: dict[str, str], **extra: str) -> Metadata:
    """The HTTP auth header as gRPC metadata, plus Serve's application routing key."""
    pairs = [(k.lower(), v) for k, v in headers.items()] + [("application", "customer")]
    return pairs + [(k.replace("_", "-"), v) for k, v in extra.items()]


def refused(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def details(error: grpc.RpcError) -> tuple[dict[str, Any], status_pb2.Status]:
    """The rich status (`grpc-status-details-bin`): ErrorInfo, BadRequest, RetryInfo."""
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    found: dict[str, Any] = {}
    for item in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if item.Is(kind.DESCRIPTOR):
                message = kind()
                item.Unpack(message)
                found[kind.__name__] = message
    assert status.code == error.code().value[0]
    return found, status


def reason(error: grpc.RpcError) -> str:
    info: error_details_pb2.ErrorInfo = details(error)[0]["ErrorInfo"]
    return info.reason


# -- customers ---------------------------------------------------------------------------


def test_customer_crud_pages_and_versions(
    customers: customers_pb2_grpc.CustomerServiceStub, agent: dict[str, str]
) -> None:
    prefix = f"Grpc {os.urandom(3).hex()}"
    made = []
    for i in range(3):
        customer, call = customers.CreateCustomer.with_call(
            customers_pb2.CreateCustomerRequest(
                name=f"{prefix} {i}", email=f"c{i}@example.com", tags=["grpc", f"n{i}"]
            ),
            metadata=md(agent),
        )
        assert (
            customer.id > 0 and customer.version == 1 and list(customer.tags) == ["grpc", f"n{i}"]
        )
        trailers = dict(call.trailing_metadata())
        assert trailers["etag"] == '"1"'
        made.append(customer)
    got = customers.GetCustomer(customers_pb2.GetCustomerRequest(id=made[0].id), metadata=md(agent))
    assert got.name == f"{prefix} 0" and got.email == "c0@example.com"
    assert got.created_at.seconds > 0

    # Cursor pages, filtered by the HTTP list's parameter names.
    seen: list[int] = []
    cursor = ""
    for _ in range(4):
        page = customers.ListCustomers(
            common_pb2.ListRequest(
                limit=2, cursor=cursor, sort="name", filters={"name[prefix]": prefix}
            ),
            metadata=md(agent),
        )
        seen += [c.id for c in page.data]
        if not page.HasField("next_cursor"):
            break
        cursor = page.next_cursor
    assert seen == [c.id for c in made]
    counted = customers.ListCustomers(
        common_pb2.ListRequest(count=True, filters={"name[prefix]": prefix, "tag[in]": "n1,n2"}),
        metadata=md(agent),
    )
    assert counted.total == 2 and {c.id for c in counted.data} == {made[1].id, made[2].id}

    # Update the masked fields only; an unset masked field is cleared.
    update = customers_pb2.UpdateCustomerRequest(
        id=made[0].id,
        customer=customers_pb2.Customer(name=f"{prefix} renamed", industry="Retail"),
        update_mask=field_mask_pb2.FieldMask(paths=["name", "industry", "email"]),
    )
    changed = customers.UpdateCustomer(update, metadata=md(agent, if_match='"1"'))
    assert changed.version == 2 and changed.name == f"{prefix} renamed"
    assert changed.industry == "Retail" and not changed.HasField("email")
    assert list(changed.tags) == ["grpc", "n0"]  # not in the mask: kept

    # The same version again is stale: FAILED_PRECONDITION (HTTP 412).
    stale = refused(customers.UpdateCustomer, update, metadata=md(agent, if_match="1"))
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(stale) == "stale-version"
    assert (
        customers.GetCustomer(
            customers_pb2.GetCustomerRequest(id=made[0].id), metadata=md(agent)
        ).version
        == 2
    )


def test_records_cross_between_grpc_and_http(
    customers: customers_pb2_grpc.CustomerServiceStub,
    http: httpx.Client,
    agent: dict[str, str],
) -> None:
    over_grpc = customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(name="Made over gRPC", phone="+1 555 0100"),
        metadata=md(agent),
    )
    read = http.get(f"/v1/customers/{over_grpc.id}", headers=agent)
    assert read.status_code == 200, read.text
    assert read.json()["name"] == "Made over gRPC" and read.json()["phone"] == "+1 555 0100"
    assert read.headers["etag"] == '"1"'

    over_http = http.post(
        "/v1/customers", headers=agent, json={"name": "Made over HTTP", "tags": ["web"]}
    )
    assert over_http.status_code == 201, over_http.text
    got = customers.GetCustomer(
        customers_pb2.GetCustomerRequest(id=int(over_http.json()["id"])), metadata=md(agent)
    )
    assert got.name == "Made over HTTP" and list(got.tags) == ["web"] and got.version == 1

    # An update over gRPC is what HTTP's If-Match then checks against.
    customers.UpdateCustomer(
        customers_pb2.UpdateCustomerRequest(
            id=got.id,
            customer=customers_pb2.Customer(website="https://example.com"),
            update_mask=field_mask_pb2.FieldMask(paths=["website"]),
        ),
        metadata=md(agent, if_match="1"),
    )
    stale = http.patch(
        f"/v1/customers/{got.id}", headers={**agent, "If-Match": '"1"'}, json={"industry": "x"}
    )
    assert stale.status_code == 412


# -- deals -------------------------------------------------------------------------------


def _pipeline(http: httpx.Client, headers: dict[str, str]) -> dict[str, int]:
    page = http.get("/v1/sales/pipelines", headers=headers)
    assert page.status_code == 200, page.text
    default = next(p for p in page.json()["data"] if p["is_default"])
    return {s["name"]: int(s["id"]) for s in default["stages"]}


def test_deal_create_get_list_and_move_stage(
    deals: deals_pb2_grpc.DealServiceStub,
    customers: customers_pb2_grpc.CustomerServiceStub,
    http: httpx.Client,
    agent: dict[str, str],
) -> None:
    stages = _pipeline(http, agent)
    customer = customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(name="Deal target"), metadata=md(agent)
    )
    deal = deals.CreateDeal(
        deals_pb2.CreateDealRequest(
            customer_id=customer.id,
            name="Big one",
            amount=common_pb2.Money(amount="1000.00", currency="EUR"),
            expected_close_date="2027-03-31",
        ),
        metadata=md(agent),
    )
    assert deal.status == "open" and deal.stage_id == stages["Prospecting"]
    assert deal.amount.amount == "1000.00" and deal.weighted_amount.amount.startswith("100.")
    assert deal.expected_close_date == "2027-03-31"
    assert deals.GetDeal(deals_pb2.GetDealRequest(id=deal.id), metadata=md(agent)).name == "Big one"
    listed = deals.ListDeals(
        common_pb2.ListRequest(filters={"customer_id": str(customer.id)}), metadata=md(agent)
    )
    assert [d.id for d in listed.data] == [deal.id]

    move = deals_pb2.MoveDealStageRequest(id=deal.id, stage_id=stages["Proposal"])
    moved = deals.MoveDealStage(move, metadata=md(agent, if_match='"1"'))
    assert moved.stage_id == stages["Proposal"] and moved.probability == 50 and moved.version == 2
    stale = refused(deals.MoveDealStage, move, metadata=md(agent, if_match='"1"'))
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION and reason(stale) == "stale-version"
    # A won stage goes through /won over HTTP: invalid here, as over HTTP (422).
    won = refused(
        deals.MoveDealStage,
        deals_pb2.MoveDealStageRequest(id=deal.id, stage_id=stages["Closed Won"]),
        metadata=md(agent),
    )
    assert won.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Read back over HTTP: the move made over gRPC.
    read = http.get(f"/v1/sales/deals/{deal.id}", headers=agent).json()
    assert read["stage_id"] == str(stages["Proposal"]) and read["version"] == 2

    # A closed deal refuses a stage move: FAILED_PRECONDITION, reason `conflict` (409).
    lost = http.post(f"/v1/sales/deals/{deal.id}/lost", headers=agent, json={"reason": "budget"})
    assert lost.status_code == 200, lost.text
    closed = refused(
        deals.MoveDealStage,
        deals_pb2.MoveDealStageRequest(id=deal.id, stage_id=stages["Negotiation"]),
        metadata=md(agent),
    )
    assert closed.code() == grpc.StatusCode.FAILED_PRECONDITION and reason(closed) == "conflict"


# -- tickets -----------------------------------------------------------------------------


def test_ticket_create_get_list_across_protocols(
    tickets: tickets_pb2_grpc.TicketServiceStub,
    http: httpx.Client,
    agent: dict[str, str],
) -> None:
    made = http.post("/v1/customers", headers=agent, json={"name": "Ticket owner"})
    customer_id = int(made.json()["id"])
    ticket = tickets.CreateTicket(
        tickets_pb2.CreateTicketRequest(
            customer_id=customer_id, subject="Printer on fire", priority="high", tags=["hw"]
        ),
        metadata=md(agent),
    )
    assert ticket.priority == "high" and ticket.status in ("new", "assigned")
    assert ticket.resolution_due_at.seconds > ticket.created_at.seconds
    over_http = http.get(f"/v1/support/tickets/{ticket.id}", headers=agent)
    assert over_http.status_code == 200 and over_http.json()["subject"] == "Printer on fire"

    second = http.post(
        "/v1/support/tickets",
        headers=agent,
        json={"customer_id": str(customer_id), "subject": "Also"},
    )
    assert second.status_code == 201, second.text
    got = tickets.GetTicket(
        tickets_pb2.GetTicketRequest(id=int(second.json()["id"])), metadata=md(agent)
    )
    assert got.subject == "Also" and got.priority == "normal"
    page = tickets.ListTickets(
        common_pb2.ListRequest(sort="created_at", filters={"customer_id": str(customer_id)}),
        metadata=md(agent),
    )
    assert [t.id for t in page.data] == [ticket.id, got.id]


# -- auth, permissions, errors -------------------------------------------------------------


def test_unauthenticated_calls_get_nothing(
    customers: customers_pb2_grpc.CustomerServiceStub,
    channel: grpc.Channel,
    http: httpx.Client,
    agent: dict[str, str],
    serve_app: Settings,
) -> None:
    known = http.post("/v1/customers", headers=agent, json={"name": "Secret Co"}).json()
    request = customers_pb2.GetCustomerRequest(id=int(known["id"]))
    for metadata in (
        [("application", "customer")],
        md({"authorization": "Bearer not-a-jwt"}),
        md({"authorization": "Basic abc"}),
        md({"authorization": "Bearer nf_not_a_key"}),
    ):
        error = refused(customers.GetCustomer, request, metadata=metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert "Secret" not in (error.details() or "")
        assert reason(error) == "unauthenticated"
    nothing = refused(
        customers.CreateCustomer,
        customers_pb2.CreateCustomerRequest(name="Ghost Co"),
        metadata=[("application", "customer")],
    )
    assert nothing.code() == grpc.StatusCode.UNAUTHENTICATED
    ghosts = http.get("/v1/customers", headers=agent, params={"name[prefix]": "Ghost Co"}).json()
    assert ghosts["data"] == []
    # Only the RPCs of the protos are reachable: no other method of the Gateway
    # deployment (its helpers, its constructor) answers, authenticated or not.
    for method in ("_call", "_write", "__init__", "__serve_build_asgi_app__"):
        raw = channel.unary_unary(
            f"/nextflow.v1.CustomerService/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=customers_pb2.Customer.FromString,
        )
        error = refused(raw, request, metadata=md(agent))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED, method
    # Another application's name: HAProxy and the replicas' own gRPC servers answer
    # NOT_FOUND; Ray 2.60's proxy actor sends every name to the only application
    # (proxy_router.get_handle_for_endpoint), where the same auth applies.
    other = [*md(agent)[:-1], ("application", "other")]
    if serve_app.serve_ingress == "haproxy":
        error = refused(customers.GetCustomer, request, metadata=other)
        assert error.code() == grpc.StatusCode.NOT_FOUND
    else:
        assert customers.GetCustomer(request, metadata=other).name == "Secret Co"
        error = refused(customers.GetCustomer, request, metadata=[("application", "other")])
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_api_keys_and_permissions_are_the_http_ones(
    customers: customers_pb2_grpc.CustomerServiceStub,
    tickets: tickets_pb2_grpc.TicketServiceStub,
    http: httpx.Client,
    agent: dict[str, str],
    viewer: dict[str, str],
) -> None:
    key = http.post(
        "/v1/auth/api-keys",
        headers=agent,
        json={"name": "grpc ro", "permissions": ["customer:read"]},
    )
    assert key.status_code == 201, key.text
    secret = key.json()["key"]
    known = customers.CreateCustomer(
        customers_pb2.CreateCustomerRequest(name="Keyed"), metadata=md(agent)
    )
    by_key = [("authorization", f"Bearer {secret}"), ("application", "customer")]
    assert (
        customers.GetCustomer(customers_pb2.GetCustomerRequest(id=known.id), metadata=by_key).name
        == "Keyed"
    )
    as_header = [("x-api-key", secret), ("application", "customer")]
    assert (
        customers.GetCustomer(customers_pb2.GetCustomerRequest(id=known.id), metadata=as_header).id
        == known.id
    )
    for metadata in (by_key, md(viewer)):
        denied = refused(
            customers.CreateCustomer,
            customers_pb2.CreateCustomerRequest(name="Not allowed"),
            metadata=metadata,
        )
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(denied) == "forbidden"
    denied = refused(
        tickets.CreateTicket,
        tickets_pb2.CreateTicketRequest(customer_id=known.id, subject="x"),
        metadata=md(viewer),
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    # The HTTP API says the same.
    assert http.post("/v1/customers", headers=viewer, json={"name": "x"}).status_code == 403


def test_not_found_and_invalid_input(
    customers: customers_pb2_grpc.CustomerServiceStub,
    deals: deals_pb2_grpc.DealServiceStub,
    tickets: tickets_pb2_grpc.TicketServiceStub,
    agent: dict[str, str],
) -> None:
    missing = refused(
        customers.GetCustomer, customers_pb2.GetCustomerRequest(id=123456789), metadata=md(agent)
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND and reason(missing) == "not-found"
    # The error names Serve's request id, the one in the `request_id` trailer.
    info = details(missing)[0]["ErrorInfo"]
    assert info.metadata["request_id"] == dict(missing.trailing_metadata())["request_id"]
    for call, request in (
        (deals.GetDeal, deals_pb2.GetDealRequest(id=987654321)),
        (tickets.GetTicket, tickets_pb2.GetTicketRequest(id=987654321)),
    ):
        assert refused(call, request, metadata=md(agent)).code() == grpc.StatusCode.NOT_FOUND

    # Invalid input names the fields, as the problem+json `errors` do.
    bad = refused(
        customers.CreateCustomer,
        customers_pb2.CreateCustomerRequest(name="", email="not-an-email"),
        metadata=md(agent),
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = details(bad)[0]["BadRequest"].field_violations
    assert {v.field for v in violations} >= {"name", "email"}
    for request in (
        common_pb2.ListRequest(filters={"colour": "red"}),  # unknown filter: never ignored
        common_pb2.ListRequest(sort="email"),
        common_pb2.ListRequest(limit=500),
        common_pb2.ListRequest(cursor="garbage!"),
    ):
        error = refused(customers.ListCustomers, request, metadata=md(agent))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, request
    for request in (
        customers_pb2.GetCustomerRequest(id=0),
        customers_pb2.GetCustomerRequest(id=-5),
    ):
        error = refused(customers.GetCustomer, request, metadata=md(agent))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_mask = refused(
        customers.UpdateCustomer,
        customers_pb2.UpdateCustomerRequest(
            id=1, update_mask=field_mask_pb2.FieldMask(paths=["version"])
        ),
        metadata=md(agent),
    )
    assert bad_mask.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_version = refused(
        customers.UpdateCustomer,
        customers_pb2.UpdateCustomerRequest(
            id=1, update_mask=field_mask_pb2.FieldMask(paths=["name"])
        ),
        metadata=md(agent, if_match="three"),
    )
    assert bad_version.code() == grpc.StatusCode.INVALID_ARGUMENT
    no_customer = refused(
        deals.CreateDeal,
        deals_pb2.CreateDealRequest(
            customer_id=123456789, name="x", amount=common_pb2.Money(amount="1", currency="EUR")
        ),
        metadata=md(agent),
    )
    assert no_customer.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_idempotency_keys_replay_the_first_answer(
    customers: customers_pb2_grpc.CustomerServiceStub,
    tickets: tickets_pb2_grpc.TicketServiceStub,
    http: httpx.Client,
    agent: dict[str, str],
    admin: dict[str, str],
    serve_app: Settings,
) -> None:
    key = os.urandom(8).hex()
    name = f"Once {key}"
    request = customers_pb2.CreateCustomerRequest(name=name)
    first = customers.CreateCustomer(request, metadata=md(agent, idempotency_key=key))
    again = customers.CreateCustomer(request, metadata=md(agent, idempotency_key=key))
    assert again == first
    page = http.get("/v1/customers", headers=agent, params={"name[prefix]": name}).json()
    assert [c["id"] for c in page["data"]] == [str(first.id)]
    # The same key with another request is refused; the key is per caller.
    other = refused(
        customers.CreateCustomer,
        customers_pb2.CreateCustomerRequest(name=f"{name} 2"),
        metadata=md(agent, idempotency_key=key),
    )
    assert other.code() == grpc.StatusCode.INVALID_ARGUMENT
    by_admin = customers.CreateCustomer(request, metadata=md(admin, idempotency_key=key))
    assert by_admin.id != first.id
    # Without a key, two calls make two records; tickets honour keys too.
    ticket = tickets_pb2.CreateTicketRequest(customer_id=first.id, subject="Once")
    t1 = tickets.CreateTicket(ticket, metadata=md(agent, idempotency_key=key))
    t2 = tickets.CreateTicket(ticket, metadata=md(agent, idempotency_key=key))
    t3 = tickets.CreateTicket(ticket, metadata=md(agent))
    assert t1.id == t2.id != t3.id
    # The keys are kept in PostgreSQL as HTTP's are, namespaced by RPC: a customer's
    # with the customer, on its shard; a ticket's (not one transaction) in `auth`.
    customer_keys, auth_keys = _stored_keys(serve_app, key)
    assert customer_keys == {"grpc:nextflow.v1.CreateCustomerRequest:" + key}
    assert auth_keys == {"grpc:nextflow.v1.CreateTicketRequest:" + key}


def _stored_keys(settings: Settings, key: str) -> tuple[set[str], set[str]]:
    import asyncio

    import asyncpg

    from tests.e2e.analytics_data import layout, on_each_server

    async def keys(conn: asyncpg.Connection, _: object = None) -> set[str]:
        rows = await conn.fetch("SELECT key FROM idempotency_keys WHERE key LIKE $1", f"%:{key}")
        return {r["key"] for r in rows}

    async def read() -> tuple[set[str], set[str]]:
        on_shards = await on_each_server(settings, await layout(settings), "customer", keys)
        catalog = settings.catalog_address()
        conn = await asyncpg.connect(settings.dsn_for(catalog.host, catalog.port, "auth"))
        try:
            return set().union(*on_shards), await keys(conn)
        finally:
            await conn.close()

    return asyncio.run(read())


def test_rate_limited_calls_get_resource_exhausted_with_retry_info(
    customers: customers_pb2_grpc.CustomerServiceStub,
    http: httpx.Client,
    admin: dict[str, str],
    serve_app: Settings,
) -> None:
    user = make_user(http, admin, "agent")
    me = http.get("/v1/auth/me", headers=user).json()
    allowed, call = customers.ListCustomers.with_call(
        common_pb2.ListRequest(limit=1), metadata=md(user)
    )
    trailers = dict(call.trailing_metadata())
    assert int(trailers["ratelimit-limit"]) == serve_app.rate_limit_burst
    # Use up this caller's allowance in the gateway's limiter (its GCRA state in
    # Redis): the next request is due 30 s from now.
    interval = 60_000_000 // serve_app.rate_limit_per_minute
    tolerance = interval * serve_app.rate_limit_burst
    store = redis.Redis.from_url(serve_app.redis_url)
    try:
        seconds, micros = store.time()
        now = seconds * 1_000_000 + micros
        store.set(f"rl:u{me['id']}", now + tolerance - interval + 30_000_000, px=120_000)
        limited = refused(
            customers.ListCustomers, common_pb2.ListRequest(limit=1), metadata=md(user)
        )
        assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        found, _ = details(limited)
        retry = found["RetryInfo"].retry_delay.seconds
        assert 25 <= retry <= 31 and found["ErrorInfo"].reason == "rate-limited"
        assert dict(limited.trailing_metadata())["retry-after"] == str(retry)
        over_http = http.get("/v1/customers", headers=user)
        assert over_http.status_code == 429 and int(over_http.headers["retry-after"]) >= 25
    finally:
        store.delete(f"rl:u{me['id']}")
        store.close()
    assert allowed.data is not None


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
        metadata=[("application", "customer")],
        timeout=30,
    )
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert {
        "nextflow.v1.CustomerService",
        "nextflow.v1.DealService",
        "nextflow.v1.TicketService",
    } <= names, names


def test_writes_are_read_back_at_once(
    customers: customers_pb2_grpc.CustomerServiceStub, http: httpx.Client, agent: dict[str, str]
) -> None:
    """A write over gRPC returns a read-your-writes token and the caller's next reads,
    over either protocol, see it (the gateway remembers it for the caller)."""
    for i in range(5):
        made, call = customers.CreateCustomer.with_call(
            customers_pb2.CreateCustomerRequest(name=f"Fresh {i} {time.time_ns()}"),
            metadata=md(agent),
        )
        assert dict(call.trailing_metadata()).get("nextflow-read-after")
        assert http.get(f"/v1/customers/{made.id}", headers=agent).status_code == 200
        got = customers.GetCustomer(
            customers_pb2.GetCustomerRequest(id=made.id), metadata=md(agent)
        )
        assert got.id == made.id


def test_the_readme_example_runs(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings, capsys: Any
) -> None:
    """README.md's gRPC client example, as written, against this stack."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## gRPC") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n\n")]
    assert 'token = "..."' in code and '"127.0.0.1:9000"' in code
    name = f"Acme {os.urandom(3).hex()}"
    code = (
        code.replace('token = "..."', f"token = {admin['Authorization'].split()[1]!r}")
        .replace('"127.0.0.1:9000"', repr(serve_app.serve_grpc_target))
        .replace('name="Acme"', f"name={name!r}")
        .replace('"acme-1"', repr(name))
    )
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102
    assert "StatusCode.NOT_FOUND" in capsys.readouterr().out
    made = http.get("/v1/customers", headers=admin, params={"name[prefix]": name}).json()["data"]
    assert [(c["industry"], c["version"]) for c in made] == [("Retail", 2)]
