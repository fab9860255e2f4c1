"""The Serve application over HTTP, as a client app would use it."""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import httpx
import pytest

from cluster.settings import Settings
from shards import ids
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, bearer, login

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


def test_health_and_ready(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    ready = http.get("/ready")
    assert ready.status_code == 200, ready.text
    assert {"redis", "auth", "customer", "product"} <= set(ready.json()["checks"])
    assert http.get("/docs").status_code == 200
    assert "/v1/customers/{customer_id}" in http.get("/openapi.json").json()["paths"]


def test_login_refresh_rotation_and_logout(http: httpx.Client) -> None:
    first = login(http, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert http.get("/v1/auth/me", headers=bearer(first["access_token"])).json()["role"] == "admin"

    rotated = http.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]

    # The spent token comes back: refused, and the whole family is revoked, with the
    # access tokens issued to it (the holder of the copy may have one too); another
    # sign-in of the same user keeps working.
    other = login(http, ADMIN_EMAIL, ADMIN_PASSWORD)
    reuse = http.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and reuse.headers["content-type"] == PROBLEM
    assert (
        http.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code
        == 401
    )
    for pair in (first, second):
        gone = _refused(http, pair["access_token"])
        assert gone.status_code == 401 and "revoked" in gone.json()["detail"], gone.text
    assert http.get("/v1/auth/me", headers=bearer(other["access_token"])).status_code == 200

    # Signing out with the refresh token alone revokes that sign-in's access tokens.
    third = login(http, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert (
        http.post("/v1/auth/logout", json={"refresh_token": third["refresh_token"]}).status_code
        == 204
    )
    assert (
        http.post("/v1/auth/refresh", json={"refresh_token": third["refresh_token"]}).status_code
        == 401
    )
    assert _refused(http, third["access_token"]).status_code == 401
    assert http.get("/v1/auth/me", headers=bearer(other["access_token"])).status_code == 200

    # Signing out with the access token in hand revokes it at once; another sign-in's
    # token of the same user keeps working.
    fourth, fifth = (login(http, ADMIN_EMAIL, ADMIN_PASSWORD) for _ in range(2))
    signed_out = http.post(
        "/v1/auth/logout",
        headers=bearer(fourth["access_token"]),
        json={"refresh_token": fourth["refresh_token"]},
    )
    assert signed_out.status_code == 204
    gone = _refused(http, fourth["access_token"])
    assert gone.status_code == 401 and "revoked" in gone.json()["detail"], gone.text
    assert http.get("/v1/auth/me", headers=bearer(fifth["access_token"])).status_code == 200

    wrong = http.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": "nope"})
    assert wrong.status_code == 401


def _refused(http: httpx.Client, access_token: str) -> httpx.Response:
    """`GET /v1/auth/me` with the token, asked up to three times: the revocation check
    fails open for a moment should Redis not answer (docs/security.md)."""
    for _ in range(3):
        answer = http.get("/v1/auth/me", headers=bearer(access_token))
        if answer.status_code == 401:
            break
        time.sleep(0.5)
    return answer


def test_authentication_failures_are_401(http: httpx.Client) -> None:
    assert http.get("/v1/customers").status_code == 401
    assert http.get("/v1/customers", headers=bearer("forged.jwt.token")).status_code == 401
    assert http.get("/v1/customers", headers={"Authorization": "Basic abc"}).status_code == 401
    assert (
        http.get("/v1/customers", headers={"X-API-Key": "nf_000000000000_nope"}).status_code == 401
    )
    body = http.get("/v1/customers").json()
    assert body["status"] == 401 and body["type"].endswith("/unauthenticated")
    assert body["request_id"]


def test_a_problem_type_resolves_to_its_page(http: httpx.Client, admin: dict[str, str]) -> None:
    """Issue 24: a problem's `type` pointed at pages that did not exist. It is now a
    reference to the API's own page (public), resolved against the request's URL."""
    for problem in (
        http.get("/v1/customers"),  # 401
        http.get("/v1/customers/1", headers=admin),  # 404
        http.post("/v1/customers", headers=admin, json={"name": ""}),  # 422
    ):
        body = problem.json()
        page = http.get(str(problem.url.join(body["type"])))
        assert page.status_code == 200, (body, page.text)
        assert page.json()["status"] == body["status"] and page.json()["type"] == body["type"]
    # Each application's own document is finished as the merged one is.
    own = http.get("/v1/customers/openapi.json").json()
    assert "bearer" in own["components"]["securitySchemes"]
    assert own["paths"]["/{customer_id}"]["get"]["responses"]["404"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    listed = http.get("/errors").json()["data"]
    assert {"/errors/stale-version", "/errors/unavailable"} <= {p["type"] for p in listed}
    assert http.get("/errors/no-such-kind").status_code == 404


def test_roles_gate_writes(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str], viewer: dict[str, str]
) -> None:
    denied = http.post("/v1/customers", headers=viewer, json={"name": "Viewer Co"})
    assert denied.status_code == 403 and denied.headers["content-type"] == PROBLEM
    created = http.post("/v1/customers", headers=agent, json={"name": "Agent Co"})
    assert created.status_code == 201
    customer_id = created.json()["id"]
    assert http.get(f"/v1/customers/{customer_id}", headers=viewer).status_code == 200
    assert (
        http.patch(f"/v1/customers/{customer_id}", headers=viewer, json={"name": "x"}).status_code
        == 403
    )
    assert http.delete(f"/v1/customers/{customer_id}", headers=viewer).status_code == 403
    assert (
        http.delete(f"/v1/customers/{customer_id}", headers=agent).status_code == 403
    )  # no delete
    assert http.post("/v1/auth/users", headers=agent, json={}).status_code in (403, 422)
    assert http.get("/v1/auth/users", headers=agent).status_code == 403
    # An agent may not hand a customer to someone else (mass assignment of owner_id).
    other = http.post("/v1/customers", headers=agent, json={"name": "Given", "owner_id": "1"})
    assert other.status_code == 403


def test_customer_lifecycle_with_versions(http: httpx.Client, admin: dict[str, str]) -> None:
    created = http.post(
        "/v1/customers",
        headers={**admin, "X-Request-Id": "req-123"},
        json={"name": "Acme", "email": "ops@acme.com", "tags": ["vip"]},
    )
    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"] == "req-123"
    body = created.json()
    assert isinstance(body["id"], str) and body["version"] == 1
    assert created.headers["location"] == f"/v1/customers/{body['id']}"
    assert created.headers["etag"] == '"1"'
    url = f"/v1/customers/{body['id']}"

    stale = http.patch(url, headers={**admin, "If-Match": '"7"'}, json={"name": "Acme 2"})
    assert stale.status_code == 412 and stale.headers["content-type"] == PROBLEM
    fresh = http.patch(url, headers={**admin, "If-Match": '"1"'}, json={"name": "Acme 2"})
    assert fresh.status_code == 200 and fresh.json()["version"] == 2
    assert fresh.headers["etag"] == '"2"'
    # The stale version is still refused after the update.
    assert (
        http.patch(url, headers={**admin, "If-Match": '"1"'}, json={"name": "x"}).status_code == 412
    )
    assert http.delete(url, headers={**admin, "If-Match": '"1"'}).status_code == 412

    assert http.delete(url, headers=admin).status_code == 204
    assert http.get(url, headers=admin).status_code == 404
    restored = http.post(f"{url}/restore", headers=admin)
    assert restored.status_code == 200 and restored.json()["name"] == "Acme 2"
    assert http.get(url, headers=admin).status_code == 200


def test_bad_input_gets_clear_problems(http: httpx.Client, admin: dict[str, str]) -> None:
    bad = http.post(
        "/v1/customers", headers=admin, json={"name": "", "email": "not-an-email", "version": 3}
    )
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM
    fields = {e["field"] for e in bad.json()["errors"]}
    assert {"name", "email", "version"} <= fields

    malformed = http.post(
        "/v1/customers", headers={**admin, "Content-Type": "application/json"}, content=b"{nope"
    )
    assert malformed.status_code == 400

    assert http.get("/v1/customers/12345", headers=admin).status_code == 404
    foreign = ids.make_id(ids.EPOCH_MS + 10_000, 900, 1)  # shard bits name no shard
    assert http.get(f"/v1/customers/{foreign}", headers=admin).status_code == 404
    assert http.get("/v1/customers/abc", headers=admin).status_code == 422
    assert http.get(f"/v1/customers/{2**64}", headers=admin).status_code == 422
    unknown = http.get("/v1/customers?colour=red", headers=admin)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "colour"
    assert http.get("/v1/customers?sort=-email", headers=admin).status_code == 422
    assert http.get("/v1/customers?limit=500", headers=admin).status_code == 422
    assert http.get("/v1/customers?cursor=garbage", headers=admin).status_code == 400
    assert (
        http.patch("/v1/customers/1", headers={**admin, "If-Match": "v1"}, json={}).status_code
        == 400
    )
    assert http.get("/nowhere", headers=admin).status_code == 404


def test_records_land_on_the_shard_their_id_names(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    made = [
        http.post(
            "/v1/customers", headers=admin, json={"name": f"Routed {i}", "tags": ["routed"]}
        ).json()
        for i in range(12)
    ]
    contact = http.post(
        f"/v1/customers/{made[0]['id']}/contacts", headers=admin, json={"first_name": "Ana"}
    )
    assert contact.status_code == 201
    assert ids.shard_of(int(contact.json()["id"])) == ids.shard_of(int(made[0]["id"]))
    assert contact.json()["customer_id"] == made[0]["id"]

    async def where_are_they() -> dict[int, set[str]]:
        s = serve_app
        found: dict[int, set[str]] = {}
        for address in s.shard_server_addresses():
            conn = await asyncpg.connect(s.dsn_for(address.host, address.port, "customer"))
            try:
                rows = await conn.fetch(
                    "SELECT id FROM customers WHERE 'routed' = ANY(tags) UNION ALL "
                    "SELECT id FROM contacts WHERE first_name = 'Ana'"
                )
            finally:
                await conn.close()
            for r in rows:
                found.setdefault(r["id"], set()).add(address.name)
        return found

    placement = asyncio.run(where_are_they())
    shards_per_server = {"shard1": set(range(0, 5)), "shard2": set(range(5, 10))}
    for record_id, servers in placement.items():
        assert len(servers) == 1, f"{record_id} stored on {servers}"
        (server,) = servers
        assert ids.shard_of(record_id) in shards_per_server[server]
    assert len({ids.shard_of(int(c["id"])) for c in made}) > 1  # really spread over shards


def test_pages_cover_every_record_once_across_shards(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    tag = f"page-{os.urandom(3).hex()}"
    names = [f"{chr(65 + (i * 7) % 26)}-{i:02d}" for i in range(33)]
    created = {}
    for name in names:
        r = http.post("/v1/customers", headers=admin, json={"name": name, "tags": [tag]})
        created[r.json()["id"]] = r.json()
    for sort in ("name", "-name", "-created_at", "created_at"):
        seen: list[dict[str, object]] = []
        cursor = None
        while True:
            params = {"tag": tag, "sort": sort, "limit": "7"}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/v1/customers", headers=admin, params=params)
            assert page.status_code == 200, page.text
            seen += page.json()["data"]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert sorted(c["id"] for c in seen) == sorted(created)  # no skip, no repeat
        field, reverse = sort.lstrip("-"), sort.startswith("-")
        keys = [(c[field], int(c["id"])) for c in seen]  # type: ignore[call-overload]
        assert keys == sorted(keys, reverse=reverse)
    counted = http.get(
        "/v1/customers", headers=admin, params={"tag": tag, "count": "true", "limit": "1"}
    )
    assert counted.json()["total"] == 33
    prefix = http.get("/v1/customers", headers=admin, params={"tag": tag, "name[prefix]": "a-"})
    assert {c["name"][:2] for c in prefix.json()["data"]} == {"A-"}
    # The search body spells its filters as the query string does.
    body = {"filter": {"tag[in]": [tag], "name[prefix]": "a-"}, "sort": "-name", "limit": 200}
    searched = http.post("/v1/customers/search", headers=admin, json=body)
    assert searched.json()["data"] == prefix_desc(http, admin, tag)
    old_spelling = http.post("/v1/customers/search", headers=admin, json={"tags": [tag]})
    assert old_spelling.status_code == 422
    unknown = http.post("/v1/customers/search", headers=admin, json={"filter": {"colour": "x"}})
    assert unknown.status_code == 422


def prefix_desc(http: httpx.Client, admin: dict[str, str], tag: str) -> list[object]:
    """The same list through the query string."""
    params = {"tag[in]": tag, "name[prefix]": "a-", "sort": "-name", "limit": "200"}
    listed = http.get("/v1/customers", headers=admin, params=params)
    assert listed.status_code == 200 and listed.json()["data"]
    data: list[object] = listed.json()["data"]
    return data


def test_contacts_live_with_their_customer(http: httpx.Client, agent: dict[str, str]) -> None:
    customer = http.post("/v1/customers", headers=agent, json={"name": "Contacts Co"}).json()
    base = f"/v1/customers/{customer['id']}/contacts"
    made = [http.post(base, headers=agent, json={"first_name": f"P{i}"}).json() for i in range(5)]
    listed = http.get(base, headers=agent, params={"limit": "2", "sort": "created_at"}).json()
    assert [c["id"] for c in listed["data"]] == [c["id"] for c in made[:2]]
    second = http.get(
        base,
        headers=agent,
        params={"limit": "2", "sort": "created_at", "cursor": listed["next_cursor"]},
    ).json()
    assert [c["id"] for c in second["data"]] == [c["id"] for c in made[2:4]]
    one = f"/v1/customers/contacts/{made[0]['id']}"
    assert (
        http.patch(one, headers={**agent, "If-Match": '"5"'}, json={"title": "CTO"}).status_code
        == 412
    )
    assert (
        http.patch(one, headers={**agent, "If-Match": '"1"'}, json={"title": "CTO"}).json()["title"]
        == "CTO"
    )
    assert (
        http.post(
            "/v1/customers/12345/contacts", headers=agent, json={"first_name": "X"}
        ).status_code
        == 404
    )


def test_api_keys_are_scoped_and_revocable(http: httpx.Client, agent: dict[str, str]) -> None:
    too_much = http.post(
        "/v1/auth/api-keys", headers=agent, json={"name": "k", "permissions": ["user:write"]}
    )
    assert too_much.status_code == 422
    created = http.post(
        "/v1/auth/api-keys", headers=agent, json={"name": "ro", "permissions": ["customer:read"]}
    )
    assert created.status_code == 201
    key = created.json()["key"]
    assert key.startswith("nf_")
    listed = http.get("/v1/auth/api-keys", headers=agent).json()["data"]
    assert all("key" not in k for k in listed)
    assert http.get("/v1/customers", headers={"X-API-Key": key}).status_code == 200
    assert http.get("/v1/customers", headers=bearer(key)).status_code == 200
    assert (
        http.post("/v1/customers", headers={"X-API-Key": key}, json={"name": "n"}).status_code
        == 403
    )
    assert (
        http.delete(f"/v1/auth/api-keys/{created.json()['id']}", headers=agent).status_code == 200
    )
    assert http.get("/v1/customers", headers={"X-API-Key": key}).status_code == 401


def test_user_admin(http: httpx.Client, admin: dict[str, str]) -> None:
    email = f"temp-{os.urandom(3).hex()}@example.com"
    made = http.post(
        "/v1/auth/users",
        headers=admin,
        json={"email": email, "password": "a-long-password", "role": "viewer"},
    )
    assert made.status_code == 201
    dup = http.post(
        "/v1/auth/users",
        headers=admin,
        json={"email": email.upper(), "password": "a-long-password"},
    )
    assert dup.status_code == 409
    user_url = f"/v1/auth/users/{made.json()['id']}"
    tokens = login(http, email, "a-long-password")
    promoted = http.patch(user_url, headers={**admin, "If-Match": '"1"'}, json={"role": "manager"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "manager"
    # A role change revokes refresh tokens so the new role takes effect at once on refresh.
    assert (
        http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code
        == 401
    )
    assert http.delete(user_url, headers=admin).status_code == 204
    assert (
        http.post(
            "/v1/auth/login", json={"email": email, "password": "a-long-password"}
        ).status_code
        == 401
    )
    page = http.get(
        "/v1/auth/users", headers=admin, params={"role": "manager", "limit": "200"}
    ).json()
    assert any(u["email"] == email for u in page["data"])
