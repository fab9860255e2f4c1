"""Saved views (`/v1/auth/views`, `GET /v1/<list>?view=<id>`) against the session's
stack: a view's filters and sort under the request's own, checked as the list checks
them, usable by its owner (and, shared, by their team), on its own object's list."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [c["name"] for c in response.json()["data"]]


def test_a_view_filters_and_sorts_its_list_under_the_request(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str]
) -> None:
    tag = "vw" + os.urandom(3).hex()
    for name in ("Cherry", "Apple", "Banana", "Avocado"):
        made = http.post("/v1/customers", headers=admin, json={"name": name, "tags": [tag]})
        assert made.status_code == 201, made.text
    http.post("/v1/customers", headers=admin, json={"name": "Untagged"})
    body: dict[str, Any] = {
        "object": "customers", "name": f"Fruit {tag}", "filters": {"tag[in]": [tag]},
        "sort": "name", "columns": ["name", "email", "owner_id"],
    }  # fmt: skip
    created = http.post("/v1/auth/views", headers=admin, json=body)
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["filters"] == {"tag[in]": tag} and view["columns"] == body["columns"]
    assert created.headers["location"] == f"/v1/auth/views/{view['id']}"

    listed = http.get("/v1/customers", headers=admin, params={"view": view["id"]})
    assert _names(listed) == ["Apple", "Avocado", "Banana", "Cherry"]
    # The request's own parameters go on top: another filter, another sort.
    narrowed = {"view": view["id"], "name[prefix]": "A", "sort": "-name"}
    assert _names(http.get("/v1/customers", headers=admin, params=narrowed)) == [
        "Avocado", "Apple",
    ]  # fmt: skip
    paged = http.get("/v1/customers", headers=admin, params={"view": view["id"], "limit": 3})
    assert _names(paged) == ["Apple", "Avocado", "Banana"]
    rest = {"view": view["id"], "limit": 3, "cursor": paged.json()["next_cursor"]}
    assert _names(http.get("/v1/customers", headers=admin, params=rest)) == ["Cherry"]

    # A search body names a view as the query string does.
    searched = http.post("/v1/customers/search", headers=admin,
                         json={"view": view["id"], "filter": {"name[prefix]": "A"}})  # fmt: skip
    assert _names(searched) == ["Apple", "Avocado"]
    resorted = http.post("/v1/customers/search", headers=admin,
                         json={"view": view["id"], "sort": "-name", "limit": 2})  # fmt: skip
    assert _names(resorted) == ["Cherry", "Banana"]
    elsewhere = http.post("/v1/support/tickets/search", headers=admin, json={"view": view["id"]})
    assert elsewhere.status_code == 422 and "a view of customers" in elsewhere.text

    # Views are listed, changed with If-Match, and used on their own object only.
    mine = http.get("/v1/auth/views", headers=admin, params={"object": "customers"}).json()
    assert view["id"] in [v["id"] for v in mine["data"]]
    renamed = http.patch(f"/v1/auth/views/{view['id']}", headers={**admin, "If-Match": '"1"'},
                         json={"filters": {"tag": tag, "name[prefix]": "B"}})  # fmt: skip
    assert renamed.status_code == 200 and renamed.json()["version"] == 2, renamed.text
    stale = http.patch(f"/v1/auth/views/{view['id']}", headers={**admin, "If-Match": '"1"'},
                       json={"name": "x"})  # fmt: skip
    assert stale.status_code == 412
    deals = http.get("/v1/sales/deals", headers=admin, params={"view": view["id"]})
    assert deals.status_code == 422 and "a view of customers" in deals.text
    # Another user's private view is not there for them.
    theirs = http.get("/v1/customers", headers=agent, params={"view": view["id"]})
    assert theirs.status_code == 422 and theirs.json()["errors"][0]["field"] == "view"
    assert http.get(f"/v1/auth/views/{view['id']}", headers=agent).status_code == 404

    assert http.delete(f"/v1/auth/views/{view['id']}", headers=admin).status_code == 204
    assert http.get(f"/v1/auth/views/{view['id']}", headers=admin).status_code == 404


def test_a_view_is_checked_as_its_list_checks_its_query(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    base: dict[str, Any] = {"object": "tickets", "name": "Bad " + os.urandom(3).hex()}
    for bad, field in (
        ({"filters": {"colour": "red"}}, "filters.colour"),
        ({"filters": {"status[in]": ["new", "nope"]}}, "filters.statuses.1"),
        ({"sort": "-subject"}, "sort"),
        ({"filters": {"limit": "5"}}, "filters.limit"),
        ({"columns": ["subject", "salary"]}, "columns"),
    ):
        answer = http.post("/v1/auth/views", headers=admin, json={**base, **bad})
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["errors"][0]["field"].startswith(field.split(".")[0]), answer.text
    good = {**base, "filters": {"status[in]": ["new", "pending"], "priority": "high"}}
    assert http.post("/v1/auth/views", headers=admin, json=good).status_code == 201
    taken = http.post("/v1/auth/views", headers=admin, json={**good, "name": base["name"].upper()})
    assert taken.status_code == 409
    view = http.get("/v1/auth/views", headers=admin, params={"object": "tickets"}).json()
    tickets = http.get("/v1/support/tickets", headers=admin,
                       params={"view": view["data"][0]["id"], "limit": 5})  # fmt: skip
    assert tickets.status_code == 200, tickets.text
    assert all(t["status"] in ("new", "pending") and t["priority"] == "high"
               for t in tickets.json()["data"])  # fmt: skip
    unknown = http.get("/v1/customers", headers=admin, params={"view": "999999999"})
    assert unknown.status_code == 422
