"""Function and property level authorization (OWASP API5 and API3, 2023), against
every operation of the deployed app's OpenAPI schema."""

from __future__ import annotations

import os
import re

import httpx
import pytest

from tests.e2e.conftest import Member, make_user

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"

# The collection a path segment names, and the permission prefix that guards it.
RESOURCES = {
    "users": "user",
    "teams": "team",
    "customers": "customer",
    "contacts": "contact",
    "products": "product",
    "price-books": "product",
    "prices": "product",
    "pipelines": "pipeline",
    "stages": "pipeline",
    "deals": "deal",
    "order": "order",
    "orders": "order",
    "tickets": "ticket",
    "comments": "ticket",
    "queues": "queue",
    "sla-policies": "sla",
    "leads": "lead",
    "campaigns": "campaign",
    "forms": "form",
    "webhooks": "webhook",
    "deliveries": "webhook",
}
# Children whose removal changes their parent (write, not delete, on the parent).
_PART_OF_PARENT = {"members", "prices"}
_PLACEHOLDER = re.compile(r"\{[^}]+\}")
# Valid bodies for the privileged creates: a body that fails validation would be a
# 422 before the permission is looked at, and prove nothing.
BODIES: dict[tuple[str, str], object] = {
    ("POST", "/v1/auth/users"): {"email": "x@example.com", "password": "long-enough-password"},
    ("POST", "/v1/auth/teams"): {"name": "x"},
    ("POST", "/v1/products"): {"sku": "AUTHZ-1", "name": "x"},
    ("POST", "/v1/products/price-books"): {"name": "x", "currency": "EUR"},
    ("PUT", "/v1/products/price-books/{book_id}/prices/{product_id}"): {"unit_price": "1.00"},
    ("POST", "/v1/sales/pipelines"): {"name": "x", "stages": [{"name": "Open", "probability": 10}]},
    ("POST", "/v1/sales/pipelines/{pipeline_id}/stages"): {"name": "x", "probability": 10},
    ("POST", "/v1/support/queues"): {"name": "x"},
    ("PUT", "/v1/support/queues/{queue_id}/members/{user_id}"): {"active": True},
    ("PUT", "/v1/support/sla-policies/{priority}"): {"first_response_s": 60, "resolution_s": 600},
    ("POST", "/v1/marketing/campaigns"): {"name": "x", "type": "email"},
    ("POST", "/v1/marketing/campaigns/{campaign_id}/members"): {"contact_id": "1"},
    ("PATCH", "/v1/marketing/campaigns/{campaign_id}/members/{member_id}"): {"status": "sent"},
    ("POST", "/v1/marketing/forms"): {"name": "x"},
    # User 1 is the admin: assigning to someone else needs ticket:assign.
    ("POST", "/v1/support/tickets/{ticket_id}/assign"): {"assignee_id": "1"},
    ("POST", "/v1/webhooks"): {"url": "https://example.com/hook", "event_types": ["*"]},
}


def required_permission(method: str, path: str) -> str | None:
    """The permission an operation needs, by the REST shape of its path (None for
    the routes outside the role table: sign-in, own notifications, files, jobs)."""
    segments = [s for s in path.strip("/").split("/") if not _PLACEHOLDER.fullmatch(s)]
    if segments[:1] == ["v1"]:  # /v1/<service>/...: the service's own prefix
        segments = segments[1:]
    if segments[:2] in (["auth", "users"], ["auth", "teams"]):
        segments = segments[1:]
    named = [s for s in segments if s in RESOURCES or s in _PART_OF_PARENT]
    if not named or segments[0] in ("auth", "files", "integration") or "capture" in segments:
        return None
    last = named[-1]
    if last in _PART_OF_PARENT:
        parent = [s for s in named if s in RESOURCES and s not in _PART_OF_PARENT]
        return f"{RESOURCES[parent[-1]]}:write" if method != "GET" else None
    resource = RESOURCES[last]
    action = segments[-1]
    if method == "GET":
        return f"{resource}:read"
    if resource == "user" and method != "GET":
        return "user:write"  # users are deactivated, never deleted
    if method == "DELETE" or action == "restore":
        return f"{resource}:delete"
    if action == "assign":
        return f"{resource}:assign"
    if action == "convert":
        return "lead:convert"
    if action in ("search",):
        return f"{resource}:read"
    return f"{resource}:write"


def _concrete(path: str) -> str:
    def fill(match: re.Match[str]) -> str:
        return "high" if match[0] == "{priority}" else "1"

    return _PLACEHOLDER.sub(fill, path)


def _permissions(http: httpx.Client, headers: dict[str, str]) -> dict[str, set[str]]:
    roles = http.get("/v1/auth/roles", headers=headers)
    assert roles.status_code == 200, roles.text
    return {r["name"]: set(r["permissions"]) for r in roles.json()["data"]}


def test_every_privileged_operation_refuses_agents_and_viewers(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str], viewer: dict[str, str]
) -> None:
    """Every operation needing a permission that neither an agent nor a viewer has
    (users, configuration, webhooks, deletes and restores, assignment) is 403 for
    both, before the record is even looked up; the list comes from the live schema,
    so a new admin route is covered without touching this test."""
    perms = _permissions(http, admin)
    ordinary = perms["agent"] | perms["viewer"]
    paths = http.get("/openapi.json").json()["paths"]
    privileged: list[tuple[str, str, str]] = []
    for path, operations in paths.items():
        for method in operations:
            needed = required_permission(method.upper(), path)
            if needed is not None and needed not in perms["admin"]:
                # Configuration has no delete permission of its own: write covers it.
                needed = needed.replace(":delete", ":write")
            if needed is not None and needed not in ordinary:
                assert needed in perms["admin"], f"{method} {path}: {needed} is in no role"
                privileged.append((method.upper(), path, needed))
    assert len(privileged) >= 50  # the classifier really found the admin surface
    failures = []
    for method, path, needed in privileged:
        body = BODIES.get((method, path), {} if method in ("POST", "PUT", "PATCH") else None)
        for role, headers in (("agent", agent), ("viewer", viewer)):
            response = http.request(method, _concrete(path), headers=headers, json=body)
            if response.status_code != 403 or response.headers["content-type"] != PROBLEM:
                failures.append(f"{role} {method} {path} ({needed}): {response.status_code}")
    assert not failures, "\n".join(failures)


def test_request_bodies_refuse_server_owned_and_unknown_fields(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str]
) -> None:
    """Mass assignment: ids, versions, timestamps and unknown fields in a body are 422
    (never silently taken); `owner_id` and `role` only with the permission for them."""
    customer = http.post("/v1/customers", headers=agent, json={"name": "Mass Co"}).json()
    for field, value in (
        ("id", "1"),
        ("version", 99),
        ("created_at", "2020-01-01T00:00:00Z"),
        ("deleted_at", None),
        ("shard", 3),
        ("is_admin", True),
    ):
        made = http.post("/v1/customers", headers=agent, json={"name": "Mass", field: value})
        assert made.status_code == 422, (field, made.text)
        changed = http.patch(f"/v1/customers/{customer['id']}", headers=agent, json={field: value})
        assert changed.status_code == 422, (field, changed.text)
        assert field in {e["field"] for e in changed.json()["errors"]}
    after = http.get(f"/v1/customers/{customer['id']}", headers=agent).json()
    assert after["version"] == customer["version"] and after["id"] == customer["id"]

    # Owner: an agent may not give a record to someone else, on create or update.
    me = http.get("/v1/auth/me", headers=agent).json()
    admin_id = http.get("/v1/auth/me", headers=admin).json()["id"]
    assert me["id"] != admin_id
    given = http.patch(
        f"/v1/customers/{customer['id']}", headers=agent, json={"owner_id": admin_id}
    )
    assert given.status_code == 403
    deal = http.post(
        "/v1/sales/deals",
        headers=agent,
        json={
            "customer_id": customer["id"],
            "name": "Mass deal",
            "amount": {"amount": "1", "currency": "EUR"},
            "owner_id": admin_id,
        },
    )
    assert deal.status_code in (403, 422) and deal.status_code != 201, deal.text

    # Role: nobody changes their own role; only user administrators set roles.
    raised = http.patch(f"/v1/auth/users/{me['id']}", headers=agent, json={"role": "admin"})
    assert raised.status_code == 403
    assert http.get("/v1/auth/me", headers=agent).json()["role"] == "agent"
    key = http.post(
        "/v1/auth/api-keys",
        headers=agent,
        json={"name": f"k{os.urandom(3).hex()}", "permissions": ["user:write"]},
    )
    assert key.status_code in (403, 422), key.text  # no key with more than its maker has


def test_deactivation_and_demotion_cut_off_access_tokens_at_once(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    """An access token stays a valid JWT until it expires; the gateway still refuses
    it once its user is deactivated or changes role, without waiting for expiry."""
    leaving = make_user(http, admin, "manager")
    demoted = make_user(http, admin, "manager")
    assert http.get("/v1/auth/users", headers=leaving).status_code == 200
    assert http.get("/v1/auth/users", headers=demoted).status_code == 200
    leaving_id = http.get("/v1/auth/me", headers=leaving).json()["id"]
    demoted_id = http.get("/v1/auth/me", headers=demoted).json()["id"]
    assert http.delete(f"/v1/auth/users/{leaving_id}", headers=admin).status_code in (200, 204)
    patched = http.patch(f"/v1/auth/users/{demoted_id}", headers=admin, json={"role": "viewer"})
    assert patched.status_code == 200, patched.text
    for headers in (leaving, demoted):
        refused = http.get("/v1/customers", headers=headers)
        assert refused.status_code == 401 and refused.headers["content-type"] == PROBLEM
        assert "revoked" in refused.json()["detail"]
    # The admin's own token is untouched.
    assert http.get("/v1/auth/users", headers=admin).status_code == 200


def test_an_admin_sets_a_roles_scopes_and_its_tokens_are_cut_off(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str]
) -> None:
    """`PATCH /v1/auth/roles/{name}`: admin only, values checked, and the role's users'
    tokens cut off at once (a narrowed scope does not wait for them to run out). The
    manager role is restored at the end."""
    listed = http.get("/v1/auth/roles", headers=admin).json()["data"]
    before = {r["name"]: r for r in listed}["manager"]
    tag = os.urandom(3).hex()
    boss = Member(http, admin, "manager", None)
    theirs = http.post("/v1/customers", headers=admin, json={"name": f"Role {tag} admin"})
    mine = http.post("/v1/customers", headers=boss.headers,
                     json={"name": f"Role {tag} boss", "phone": "+49 30 1"})  # fmt: skip
    assert theirs.status_code == mine.status_code == 201

    assert (
        http.patch("/v1/auth/roles/manager", headers=agent, json={"scopes": {}}).status_code == 403
    )
    assert (
        http.patch("/v1/auth/roles/nobody", headers=admin, json={"scopes": {}}).status_code == 404
    )
    for role, body, field in (
        ("manager", {"scopes": {"webhook:read": "own"}}, "scopes.webhook:read"),
        ("viewer", {"scopes": {"customer:write": "own"}}, "scopes.customer:write"),
        ("manager", {"hidden_fields": {"customer": ["name"]}}, "hidden_fields.customer"),
        ("manager", {"hidden_fields": {"deal": ["amount"]}}, "hidden_fields.deal"),
        ("manager", {"scopes": {"customer:read": "everyone"}}, None),
    ):
        refused = http.patch(f"/v1/auth/roles/{role}", headers=admin, json=body)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == PROBLEM
        if field:
            assert [e["field"] for e in refused.json()["errors"]] == [field]
    assert http.get("/v1/auth/me", headers=boss.headers).status_code == 200  # nothing changed
    # A PATCH that changes nothing (the role's own maps, or empty ones where the role
    # has none) cuts nobody off.
    same = http.patch("/v1/auth/roles/manager", headers=admin, json={
        "scopes": before["scopes"], "hidden_fields": before["hidden_fields"],
    })  # fmt: skip
    assert same.status_code == 200 and same.json() == before, same.text
    listed = http.get("/v1/auth/roles", headers=admin).json()["data"]
    admin_role = {r["name"]: r for r in listed}["admin"]
    assert admin_role["scopes"] == admin_role["hidden_fields"] == {}
    noop = http.patch(
        "/v1/auth/roles/admin", headers=admin, json={"scopes": {}, "hidden_fields": {}}
    )
    assert noop.status_code == 200, noop.text
    assert http.get("/v1/auth/me", headers=boss.headers).status_code == 200
    assert http.get("/v1/auth/me", headers=admin).status_code == 200

    try:
        changed = http.patch("/v1/auth/roles/manager", headers=admin, json={
            "scopes": {"customer:read": "own"}, "hidden_fields": {"customer": ["phone"]},
        })  # fmt: skip
        assert changed.status_code == 200, changed.text
        assert changed.json()["scopes"] == {"customer:read": "own"}
        assert changed.json()["hidden_fields"] == {"customer": ["phone"]}
        gone = http.get("/v1/auth/me", headers=boss.headers)
        assert gone.status_code == 401 and "revoked" in gone.json()["detail"]
        boss.sign_in()  # the new token carries the new scope
        page = http.get(
            "/v1/customers", headers=boss.headers, params={"name[prefix]": f"Role {tag}"}
        )
        assert [c["name"] for c in page.json()["data"]] == [f"Role {tag} boss"]
        other = http.get(f"/v1/customers/{theirs.json()['id']}", headers=boss.headers)
        assert other.status_code == 404
        seen = http.get(f"/v1/customers/{mine.json()['id']}", headers=boss.headers).json()
        assert seen["phone"] is None and seen["name"] == f"Role {tag} boss"
    finally:
        restored = http.patch("/v1/auth/roles/manager", headers=admin, json={
            "scopes": before["scopes"], "hidden_fields": before["hidden_fields"],
        })  # fmt: skip
        assert restored.status_code == 200, restored.text
    assert restored.json() == before


def test_no_route_of_any_application_answers_without_credentials(http: httpx.Client) -> None:
    """Every route of every application goes through the shared pipeline: without
    credentials each answers 401 problem+json, except the public ones, listed in one
    place (`deployments.api.app.PUBLIC`). The routes come from the merged document,
    which is built from every application's own routers."""
    from deployments.api.app import PREFIXES, PUBLIC

    paths = http.get("/openapi.json").json()["paths"]
    operations = [(m.upper(), p) for p, ops in paths.items() for m in ops]
    assert len(operations) >= 150
    assert {p for p in paths if not p.startswith(("/v1/overview", "/errors"))} <= {
        p for p in paths if any(p.startswith(prefix) for prefix, _ in PREFIXES.values())
    }
    leaks = []
    for method, path in operations:
        if (method, path) in PUBLIC:
            continue
        response = http.request(method, _concrete(path), json={} if method != "GET" else None)
        if response.status_code != 401 or response.headers["content-type"] != PROBLEM:
            leaks.append(f"{method} {path}: {response.status_code}")
    assert not leaks, "\n".join(leaks)
    for prefix, _ in PREFIXES.values():  # each application's own liveness is public
        assert http.get(f"{prefix}/health").status_code == 200, prefix
