"""Issue 28, against the running stack: an explicit `null` in a PATCH, a non-finite
number, a cursor out of range. Each was a 500 (or silent corruption) before; each is
now a 4xx problem that names what was wrong, and nothing is written.

Every PATCH route of every service gets `null` for every field its body has, one field
at a time and all at once; a field that may be empty is cleared (200, null in the
answer), any other is refused with a 422 naming it and the record is unchanged.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from deployments._kit.custom_fields import FieldUpdate
from deployments.auth.schemas import RoleUpdate, UserUpdate, ViewUpdate
from deployments.customer.activities.schemas import ActivityUpdate
from deployments.customer.schemas import ContactUpdate, CustomerUpdate
from deployments.marketing.schemas import CampaignUpdate, FormUpdate, LeadUpdate, MemberUpdate
from deployments.product.schemas import PriceBookUpdate, ProductUpdate
from deployments.sales.schemas import DealUpdate, OrderUpdate, PipelineUpdate, StageUpdate
from deployments.support.schemas import QueueUpdate, TicketUpdate
from deployments.webhooks.schemas import WebhookUpdate
from gateway.inputs import Patch
from tests.unit.test_inputs import PATCHES

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"
Json = dict[str, Any]


def _made(answer: httpx.Response) -> Json:
    assert answer.status_code == 201, answer.text
    made: Json = answer.json()
    return made


class World:
    """One record of every kind a PATCH route changes, made through the API."""

    def __init__(self, http: httpx.Client, admin: dict[str, str]) -> None:
        self.http, self.admin = http, admin
        tag = os.urandom(3).hex()
        self.tag = tag
        self.customer = self.post("/v1/customers", {"name": f"Null {tag}", "tags": ["t"]})
        self.product = self.post("/v1/products", {"sku": f"NULL-{tag}", "name": "Widget"})
        self.book = self.post(
            "/v1/products/price-books", {"name": f"Book {tag}", "currency": "EUR"}
        )
        put = http.put(
            f"/v1/products/price-books/{self.book['id']}/prices/{self.product['id']}",
            headers=admin,
            json={"unit_price": "10.00"},
        )
        assert put.status_code in (200, 201), put.text

    def post(self, path: str, body: Json) -> Json:
        return _made(self.http.post(path, headers=self.admin, json=body))

    # Each kind: (the record's URL, the record as the API answers it).
    def customer_url(self) -> tuple[str, Json]:
        made = self.post("/v1/customers", {"name": "C", "email": "c@example.com", "tags": ["a"]})
        return f"/v1/customers/{made['id']}", made

    def contact_url(self) -> tuple[str, Json]:
        made = self.post(f"/v1/customers/{self.customer['id']}/contacts",
                         {"first_name": "Ann", "last_name": "Lee", "title": "CTO"})  # fmt: skip
        return f"/v1/customers/contacts/{made['id']}", made

    def activity_url(self) -> tuple[str, Json]:
        contact = self.post(f"/v1/customers/{self.customer['id']}/contacts", {"first_name": "T"})
        made = self.post("/v1/customers/activities", {
            "kind": "task", "customer_id": self.customer["id"], "contact_id": contact["id"],
            "subject": "S", "body": "b", "due_at": "2030-01-01T10:00:00Z", "priority": "high",
            "remind_at": "2029-12-31T10:00:00Z", "occurred_at": "2029-12-01T10:00:00Z",
            "duration_minutes": 5, "outcome": "o", "direction": "outbound",
        })  # fmt: skip
        return f"/v1/customers/activities/{made['id']}", made

    def pipeline_url(self) -> tuple[str, Json]:
        made = self.post("/v1/sales/pipelines", {
            "name": f"P {os.urandom(3).hex()}", "stages": [{"name": "Open", "probability": 10}],
        })  # fmt: skip
        return f"/v1/sales/pipelines/{made['id']}", made

    def stage_url(self) -> tuple[str, Json]:
        url, pipeline = self.pipeline_url()
        made = self.post(f"{url}/stages", {"name": "Next", "probability": 50})
        return f"{url}/stages/{made['id']}", made

    def deal_url(self) -> tuple[str, Json]:
        made = self.post("/v1/sales/deals", {"customer_id": self.customer["id"], "name": "D",
                                             "amount": {"amount": "100.00", "currency": "EUR"},
                                             "probability": 20})  # fmt: skip
        return f"/v1/sales/deals/{made['id']}", made

    def order_url(self) -> tuple[str, Json]:
        made = self.post("/v1/sales/orders", {
            "customer_id": self.customer["id"], "price_book_id": self.book["id"],
            "lines": [{"product_id": self.product["id"], "quantity": "2"}], "notes": "n",
        })  # fmt: skip
        return f"/v1/sales/orders/{made['id']}", made

    def role_url(self) -> tuple[str, Json]:
        listed = self.http.get("/v1/auth/roles", headers=self.admin).json()["data"]
        roles = {r["name"]: r for r in listed}
        return "/v1/auth/roles/viewer", roles["viewer"]

    def user_url(self) -> tuple[str, Json]:
        made = self.post("/v1/auth/users", {"email": f"null-{os.urandom(4).hex()}@example.com",
                                            "password": "long-enough-password"})  # fmt: skip
        return f"/v1/auth/users/{made['id']}", made

    def ticket_url(self) -> tuple[str, Json]:
        made = self.post("/v1/support/tickets", {"customer_id": self.customer["id"],
                                                 "subject": "Broken", "tags": ["x"]})  # fmt: skip
        return f"/v1/support/tickets/{made['id']}", made

    def queue_url(self) -> tuple[str, Json]:
        made = self.post("/v1/support/queues",
                         {"name": f"Q {os.urandom(3).hex()}", "description": "d"})  # fmt: skip
        return f"/v1/support/queues/{made['id']}", made

    def lead_url(self) -> tuple[str, Json]:
        made = self.post("/v1/marketing/leads", {
            "email": f"lead-{os.urandom(4).hex()}@example.com", "company": "Acme",
            "first_name": "Bo", "notes": "n",
        })  # fmt: skip
        return f"/v1/marketing/leads/{made['id']}", made

    def campaign_url(self) -> tuple[str, Json]:
        budget = {"amount": "10.00", "currency": "EUR"}
        body = {"name": "Camp", "type": "email", "budget": budget, "description": "d"}
        made = self.post("/v1/marketing/campaigns", body)
        return f"/v1/marketing/campaigns/{made['id']}", made

    def member_url(self) -> tuple[str, Json]:
        url, _ = self.campaign_url()
        _, lead = self.lead_url()
        made = self.post(f"{url}/members", {"lead_id": lead["id"]})
        return f"{url}/members/{made['id']}", made

    def form_url(self) -> tuple[str, Json]:
        made = self.post("/v1/marketing/forms", {"name": f"F {os.urandom(3).hex()}"})
        return f"/v1/marketing/forms/{made['id']}", made

    def book_url(self) -> tuple[str, Json]:
        made = self.post("/v1/products/price-books",
                         {"name": f"B {os.urandom(3).hex()}", "currency": "USD",
                          "description": "d"})  # fmt: skip
        return f"/v1/products/price-books/{made['id']}", made

    def product_url(self) -> tuple[str, Json]:
        made = self.post("/v1/products", {"sku": f"N-{os.urandom(4).hex()}", "name": "P",
                                          "description": "d", "family": "f"})  # fmt: skip
        return f"/v1/products/{made['id']}", made

    def field_url(self) -> tuple[str, Json]:
        made = self.post("/v1/auth/fields", {
            "object": "deals", "key": f"null_{os.urandom(4).hex()}", "label": "L",
            "description": "d", "type": "single_select", "default": "a",
            "options": [{"value": "a", "label": "A"}],
        })  # fmt: skip
        return f"/v1/auth/fields/{made['id']}", made

    def view_url(self) -> tuple[str, Json]:
        name = f"V {os.urandom(3).hex()}"
        made = self.post("/v1/auth/views", {"object": "customers", "name": name, "sort": "name"})
        return f"/v1/auth/views/{made['id']}", made

    def webhook_url(self) -> tuple[str, Json]:
        made = self.post("/v1/webhooks", {"url": "http://127.0.0.2:9/null",
                                          "event_types": ["*"], "description": "d"})  # fmt: skip
        return f"/v1/webhooks/{made['id']}", made


# PATCH body model -> how to make a record it changes. A new PATCH route whose body is
# not here fails `test_every_patch_route_is_covered`.
MAKERS: dict[type[Patch], Callable[[World], tuple[str, Json]]] = {
    CustomerUpdate: World.customer_url,
    ContactUpdate: World.contact_url,
    ActivityUpdate: World.activity_url,
    PipelineUpdate: World.pipeline_url,
    StageUpdate: World.stage_url,
    DealUpdate: World.deal_url,
    OrderUpdate: World.order_url,
    RoleUpdate: World.role_url,
    UserUpdate: World.user_url,
    TicketUpdate: World.ticket_url,
    QueueUpdate: World.queue_url,
    LeadUpdate: World.lead_url,
    CampaignUpdate: World.campaign_url,
    MemberUpdate: World.member_url,
    FormUpdate: World.form_url,
    PriceBookUpdate: World.book_url,
    ProductUpdate: World.product_url,
    WebhookUpdate: World.webhook_url,
    ViewUpdate: World.view_url,
    FieldUpdate: World.field_url,
}


@pytest.fixture(scope="module")
def world(http: httpx.Client, admin: dict[str, str]) -> World:
    return World(http, admin)


def test_every_patch_route_is_covered() -> None:
    assert set(PATCHES) == set(MAKERS)


def _unchanged(http: httpx.Client, admin: dict[str, str], url: str, before: Json) -> None:
    if url.startswith("/v1/auth/roles/"):
        now = {r["name"]: r for r in http.get("/v1/auth/roles", headers=admin).json()["data"]}
        assert now[url.rsplit("/", 1)[1]] == before
        return
    got = http.get(url, headers=admin)
    if got.status_code == 405:
        return  # no GET of its own (stages, members): the 422 came before any write
    assert got.status_code == 200, got.text
    assert got.json().get("version") == before.get("version"), (url, got.json(), before)


@pytest.mark.parametrize("model", list(MAKERS), ids=lambda m: m.__qualname__)
def test_null_for_every_field_of_every_patch(
    http: httpx.Client, admin: dict[str, str], world: World, model: type[Patch]
) -> None:
    url, record = MAKERS[model](world)
    fields = sorted(model.model_fields)
    for name in fields:
        answer = http.patch(url, headers=admin, json={name: None})
        assert answer.status_code < 500, (url, name, answer.text)
        if name in model.never_null:
            assert answer.status_code == 422, (url, name, answer.text)
            assert answer.headers["content-type"] == PROBLEM
            assert [e["field"] for e in answer.json()["errors"]] == [name], answer.text
            _unchanged(http, admin, url, record)
        elif answer.status_code == 200:
            cleared = answer.json()
            if name in cleared:
                assert cleared[name] is None, (url, name, cleared)
            record = cleared
        else:  # a field that never changes this way (a lead's e-mail): refused, named
            assert answer.status_code == 422, (url, name, answer.text)
            assert name in answer.text
    everything = http.patch(url, headers=admin, json=dict.fromkeys(fields))
    assert everything.status_code < 500, everything.text
    if model.never_null:
        assert everything.status_code == 422
        named = sorted(e["field"] for e in everything.json()["errors"])
        assert named == sorted(model.never_null), everything.text
        _unchanged(http, admin, url, record)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused_and_nothing_is_stored(
    http: httpx.Client, admin: dict[str, str], world: World, number: str
) -> None:
    """`{"custom_fields": {"a": NaN}}` was a 201 that stored `{"a": null}`."""
    name = f"NaN {world.tag} {number}"
    raw = f'{{"name": "{name}", "custom_fields": {{"a": {number}}}}}'.encode()
    headers = {**world.admin, "Content-Type": "application/json"}
    made = http.post("/v1/customers", headers=headers, content=raw)
    assert made.status_code == 422, made.text
    assert made.headers["content-type"] == PROBLEM
    assert [e["field"] for e in made.json()["errors"]] == ["custom_fields"]
    found = http.get("/v1/customers", headers=admin, params={"name[prefix]": name})
    assert found.json()["data"] == []

    url, before = world.lead_url()
    patched = http.patch(url, headers=headers, content=f'{{"custom_fields": {{"x": [{number}]}}}}')
    assert patched.status_code == 422, patched.text
    assert http.get(url, headers=admin).json()["version"] == before["version"]
    amount = f'{{"amount": {{"amount": {number}, "currency": "EUR"}}}}'
    money = http.patch(world.deal_url()[0], headers=headers, content=amount)
    assert money.status_code == 422, money.text


def _cursor(data: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "sort", "value"),
    [
        ("/v1/customers", "-created_at", "2026-12-06T18:59:47+00:00"),
        ("/v1/sales/deals", "-created_at", "2026-12-06T18:59:47+00:00"),
        ("/v1/support/tickets", "-created_at", "2026-12-06T18:59:47+00:00"),
        ("/v1/marketing/leads", "-created_at", "2026-12-06T18:59:47+00:00"),
        ("/v1/products", "-created_at", "2026-12-06T18:59:47+00:00"),
    ],
)
def test_a_cursor_out_of_range_is_400(
    http: httpx.Client, admin: dict[str, str], path: str, sort: str, value: str
) -> None:
    for row_id in (2**63, -1, "7", 1.5):
        bad = _cursor({"s": sort, "v": value, "i": row_id})
        answer = http.get(path, headers=admin, params={"sort": sort, "cursor": bad})
        assert answer.status_code == 400, (path, row_id, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["errors"][0]["field"] == "cursor"
    good = _cursor({"s": sort, "v": value, "i": 2**63 - 1})
    assert http.get(path, headers=admin, params={"sort": sort, "cursor": good}).status_code == 200
    rank = _cursor({"s": "priority", "v": 2**15, "i": 5})
    tickets = http.get("/v1/support/tickets", headers=admin,
                       params={"sort": "priority", "cursor": rank})  # fmt: skip
    assert tickets.status_code == 400, tickets.text
