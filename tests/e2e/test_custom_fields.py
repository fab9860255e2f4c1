"""Custom fields against the session's stack: an admin defines them
(`/v1/auth/fields`), every write of a customer is checked by them (HTTP, batch, gRPC
through the same service), `cf.` filters find customers by them, the schema spells
them out, a deleted field hides its values and a restored one shows them again.

Definitions reach the customer ingress through a cache of a few seconds: each test
waits for a definition to take effect before it relies on it."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import until

pytestmark = pytest.mark.e2e


def _define(http: httpx.Client, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    made = http.post("/v1/auth/fields", headers=admin, json={"object": "customers", **body})
    assert made.status_code == 201, made.text
    assert made.headers["location"] == f"/v1/auth/fields/{made.json()['id']}"
    return dict(made.json())


def _in_effect(http: httpx.Client, admin: dict[str, str], key: str) -> None:
    """Wait until the customer ingress knows the field `key`."""

    def known() -> bool:
        schema = http.get("/v1/customers/schema", headers=admin).json()
        return key in schema["json_schema"]["properties"]["custom_fields"]["properties"]

    assert until(known, timeout=15), f"field {key} not in effect"


def test_custom_fields_are_defined_checked_filtered_and_described(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str]
) -> None:
    tag = os.urandom(3).hex()
    tier, seats, renewal = f"tier_{tag}", f"seats_{tag}", f"renewal_{tag}"
    options = [{"value": "gold", "label": "Gold"}, {"value": "silver", "label": "Silver"}]
    body = {"key": tier, "label": "Tier", "type": "single_select", "options": options}
    assert http.post("/v1/auth/fields", headers=agent, json={"object": "customers", **body}
                     ).status_code == 403  # fmt: skip
    tier_field = _define(http, admin, **body)
    _define(http, admin, key=seats, label="Seats", type="number", default=1)
    _define(http, admin, key=renewal, label="Renewal", type="date")
    again = http.post("/v1/auth/fields", headers=admin, json={"object": "customers", **body})
    assert again.status_code == 409
    no_options = {"key": f"x_{tag}", "label": "X", "type": "single_select"}
    assert http.post("/v1/auth/fields", headers=admin,
                     json={"object": "customers", **no_options}).status_code == 422  # fmt: skip
    _in_effect(http, admin, renewal)

    def customer(name: str, values: dict[str, Any]) -> dict[str, Any]:
        made = http.post("/v1/customers", headers=admin,
                         json={"name": f"{name} {tag}", "custom_fields": values})  # fmt: skip
        assert made.status_code == 201, made.text
        return dict(made.json())

    gold = customer("Gold", {tier: "gold", seats: 50, renewal: "2027-03-01"})
    silver = customer("Silver", {tier: "silver", seats: 5, renewal: "2027-01-15"})
    plain = customer("Plain", {})
    assert plain["custom_fields"] == {seats: 1}  # the default
    refused = http.post("/v1/customers", headers=admin, json={
        "name": "Bad", "custom_fields": {tier: "bronze", seats: "many", "nope": 1}})  # fmt: skip
    assert refused.status_code == 422
    assert {e["field"] for e in refused.json()["errors"]} == {
        f"custom_fields.{tier}", f"custom_fields.{seats}", "custom_fields.nope",
    }  # fmt: skip

    # An update changes the fields it names (null clears one), the others stay.
    url = f"/v1/customers/{silver['id']}"
    changed = http.patch(url, headers=admin, json={"custom_fields": {renewal: None, seats: 6}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["custom_fields"] == {tier: "silver", seats: 6}

    # Lists filter by them (containment for eq/in, ranges on ordered types).
    def names(**params: str) -> list[str]:
        page = http.get("/v1/customers", headers=admin, params=params)
        assert page.status_code == 200, page.text
        return sorted(c["name"].split()[0] for c in page.json()["data"])

    assert names(**{f"cf.{tier}": "gold"}) == ["Gold"]
    assert names(**{f"cf.{tier}[in]": "gold,silver"}) == ["Gold", "Silver"]
    assert names(**{f"cf.{seats}[gte]": "6"}) == ["Gold", "Silver"]
    assert names(**{f"cf.{seats}[lt]": "6"}) == ["Plain"]
    assert names(**{f"cf.{renewal}[lt]": "2027-02-01", f"cf.{tier}": "gold"}) == []
    counted = http.get("/v1/customers", headers=admin,
                       params={f"cf.{tier}[in]": "gold,silver", "count": "true"})  # fmt: skip
    assert counted.json()["total"] == 2
    # Sorted by a custom field, paged exactly across the shards.
    ranked = {f"cf.{seats}[gte]": "0", "sort": f"-cf.{seats}", "limit": "2"}
    first = http.get("/v1/customers", headers=admin, params=ranked)
    assert first.status_code == 200, first.text
    rest = http.get("/v1/customers", headers=admin,
                    params={**ranked, "cursor": first.json()["next_cursor"]})  # fmt: skip
    order = [c["name"].split()[0] for c in first.json()["data"] + rest.json()["data"]]
    assert order == ["Gold", "Silver", "Plain"]
    assert names(**{"sort": f"cf.{tier}", f"cf.{tier}[in]": "gold,silver"}) == ["Gold", "Silver"]
    unsortable = http.get("/v1/customers", headers=admin, params={"sort": "cf.nope"})
    assert unsortable.status_code == 422 and unsortable.json()["errors"][0]["field"] == "sort"
    bad = http.get("/v1/customers", headers=admin, params={f"cf.{tier}[gt]": "gold"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == f"cf.{tier}[gt]"
    assert http.get("/v1/customers", headers=admin, params={"cf.nope": "1"}).status_code == 422
    # A saved view keeps them like any filter.
    saved = {"object": "customers", "name": f"Gold {tag}", "filters": {f"cf.{tier}": "gold"}}
    view = http.post("/v1/auth/views", headers=admin, json=saved)
    assert view.status_code == 201, view.text
    assert names(view=view.json()["id"]) == ["Gold"]

    # The schema a client builds its form from.
    schema = http.get("/v1/customers/schema", headers=agent).json()
    spelled = schema["json_schema"]["properties"]["custom_fields"]["properties"]
    assert spelled[tier]["enum"] == ["gold", "silver"] and spelled[tier]["title"] == "Tier"
    assert spelled[renewal]["format"] == "date" and spelled[seats]["default"] == 1
    assert tier in [d["key"] for d in schema["custom_fields"]]

    # Relabelled and given an option (never losing one); its values stay.
    field_url = f"/v1/auth/fields/{tier_field['id']}"
    more = [*options, {"value": "bronze", "label": "Bronze"}]
    relabel = http.patch(field_url, headers={**admin, "If-Match": '"1"'},
                         json={"label": "Level", "options": more})  # fmt: skip
    assert relabel.status_code == 200 and relabel.json()["version"] == 2, relabel.text
    lose = http.patch(field_url, headers=admin, json={"options": options[:1]})
    assert lose.status_code == 422 and "silver" in lose.text
    assert http.patch(field_url, headers=admin, json={"type": "text"}).status_code == 422

    # Deleted: hidden from reads and refused in writes; restored: back as it was.
    assert http.delete(field_url, headers=admin).status_code == 204

    def hidden() -> bool:
        found = http.get(f"/v1/customers/{gold['id']}", headers=admin).json()
        return tier not in found["custom_fields"]

    assert until(hidden, timeout=15)
    write = http.patch(f"/v1/customers/{gold['id']}", headers=admin,
                       json={"custom_fields": {tier: "gold"}})  # fmt: skip
    assert write.status_code == 422
    deleted = http.get("/v1/auth/fields", headers=admin, params={"deleted": "true"}).json()
    assert tier_field["id"] in [d["id"] for d in deleted["data"]]
    assert http.post(f"{field_url}/restore", headers=admin).status_code == 200

    def shown() -> bool:
        found = http.get(f"/v1/customers/{gold['id']}", headers=admin).json()
        return bool(found["custom_fields"].get(tier) == "gold")

    assert until(shown, timeout=15)


def test_a_required_field_is_required_of_every_write_path(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    tag = os.urandom(3).hex()
    region = f"region_{tag}"
    field = _define(http, admin, key=region, label="Region", type="text", required=True)
    try:
        _in_effect(http, admin, region)
        missing = http.post("/v1/customers", headers=admin, json={"name": f"R {tag}"})
        assert missing.status_code == 422, missing.text
        assert missing.json()["errors"] == [
            {"field": f"custom_fields.{region}", "message": "required"}
        ]
        made = http.post("/v1/customers", headers=admin,
                         json={"name": f"R {tag}", "custom_fields": {region: "EU"}})  # fmt: skip
        assert made.status_code == 201, made.text
        clear = http.patch(f"/v1/customers/{made.json()['id']}", headers=admin,
                           json={"custom_fields": {region: None}})  # fmt: skip
        assert clear.status_code == 422
        batch = http.post("/v1/customers/batch", headers=admin, json={"items": [
            {"op": "create", "data": {"name": f"B1 {tag}", "custom_fields": {region: "US"}}},
            {"op": "create", "data": {"name": f"B2 {tag}"}},
        ]})  # fmt: skip
        assert batch.status_code == 200, batch.text
        results = batch.json()["results"]
        assert [r["status"] for r in results] == [201, 422]
        assert results[1]["problem"]["errors"][0]["field"] == (
            f"items.1.data.custom_fields.{region}"
        )
    finally:
        assert http.delete(f"/v1/auth/fields/{field['id']}", headers=admin).status_code == 204

    # Gone from every ingress before the next test makes customers without it.
    def free() -> bool:
        tried = http.post("/v1/customers", headers=admin, json={"name": f"After {tag}"})
        return tried.status_code == 201

    assert until(free, timeout=15)


def test_a_csv_import_carries_custom_fields_checked_as_any_write(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    from tests.e2e.test_imports import _csv, _import

    tag = os.urandom(3).hex()
    size, plan = f"size_{tag}", f"plan_{tag}"
    options = [{"value": "s", "label": "S"}, {"value": "m", "label": "M"}]
    _define(http, admin, key=size, label="Size", type="single_select", options=options)
    _define(http, admin, key=plan, label="Plan", type="text", default="basic")
    until(lambda: http.post("/v1/integration/imports/customers", headers=admin,
                            files={"file": ("h.csv", _csv([["name", f"cf.{plan}"]]), "text/csv")}
                            ).status_code == 202, timeout=15)  # fmt: skip
    _in_effect(http, admin, plan)  # and the customer ingress shows them
    job = _import(http, admin, _csv([
        ["name", "tags", "external_id", f"cf.{size}", f"cf.{plan}"],
        ["One", tag, f"{tag}-1", "s", ""],
        ["Two", tag, f"{tag}-2", "xl", "pro"],  # line 3: not an option
        ["Three", tag, f"{tag}-3", "m", "pro"],
    ]))  # fmt: skip
    assert job["status"] == "succeeded", job
    assert job["result"]["created"] == 2 and job["result"]["failed"] == 1, job["result"]
    listed = http.get("/v1/customers", headers=admin, params={"tag": tag})
    assert listed.status_code == 200, listed.text
    mine = (size, plan)  # (fields other tests left live may add their defaults)
    got = {c["name"]: {k: v for k, v in c["custom_fields"].items() if k in mine}
           for c in listed.json()["data"]}  # fmt: skip
    assert got == {"One": {size: "s", plan: "basic"}, "Three": {size: "m", plan: "pro"}}
    # Imported again with a new value: the value changes, the rest stays.
    again = _import(http, admin, _csv([
        ["name", "tags", "external_id", f"cf.{size}"], ["Three", tag, f"{tag}-3", "s"],
    ]))  # fmt: skip
    assert again["result"]["updated"] == 1, again["result"]
    three = http.get("/v1/customers", headers=admin, params={f"cf.{size}": "s", "tag": tag})
    assert sorted(c["name"] for c in three.json()["data"]) == ["One", "Three"]
    assert {c["name"]: c["custom_fields"][plan] for c in three.json()["data"]} == {
        "One": "basic", "Three": "pro",
    }  # fmt: skip


# Each object: (its list, its schema, how to make one with these custom fields).
def _contact(http: httpx.Client, admin: dict[str, str], values: dict[str, Any]) -> httpx.Response:
    owner = http.post("/v1/customers", headers=admin, json={"name": "Owner"}).json()["id"]
    return http.post(f"/v1/customers/{owner}/contacts", headers=admin,
                     json={"first_name": "Ann", "custom_fields": values})  # fmt: skip


def _deal(http: httpx.Client, admin: dict[str, str], values: dict[str, Any]) -> httpx.Response:
    owner = http.post("/v1/customers", headers=admin, json={"name": "Buyer"}).json()["id"]
    return http.post("/v1/sales/deals", headers=admin, json={
        "customer_id": owner, "name": "D", "amount": {"amount": "10", "currency": "EUR"},
        "custom_fields": values})  # fmt: skip


def _lead(http: httpx.Client, admin: dict[str, str], values: dict[str, Any]) -> httpx.Response:
    return http.post("/v1/marketing/leads", headers=admin,
                     json={"company": "Lead Co", "custom_fields": values})  # fmt: skip


def _ticket(http: httpx.Client, admin: dict[str, str], values: dict[str, Any]) -> httpx.Response:
    owner = http.post("/v1/customers", headers=admin, json={"name": "Asker"}).json()["id"]
    body = {"customer_id": owner, "subject": "S", "custom_fields": values}
    return http.post("/v1/support/tickets", headers=admin, json=body)


def _product(http: httpx.Client, admin: dict[str, str], values: dict[str, Any]) -> httpx.Response:
    return http.post("/v1/products", headers=admin, json={
        "sku": f"CF-{os.urandom(4).hex()}", "name": "P", "custom_fields": values})  # fmt: skip


OBJECTS = {
    "contacts": (None, "/v1/customers/contacts/schema", _contact),
    "deals": ("/v1/sales/deals", "/v1/sales/deals/schema", _deal),
    "leads": ("/v1/marketing/leads", "/v1/marketing/leads/schema", _lead),
    "tickets": ("/v1/support/tickets", "/v1/support/tickets/schema", _ticket),
    "products": ("/v1/products", "/v1/products/schema", _product),
}


@pytest.mark.parametrize("object_name", sorted(OBJECTS))
def test_every_object_checks_filters_and_describes_its_custom_fields(
    http: httpx.Client, admin: dict[str, str], object_name: str
) -> None:
    listed, schema, make = OBJECTS[object_name]
    key = f"grade_{os.urandom(3).hex()}"
    options = [{"value": "a", "label": "A"}, {"value": "b", "label": "B"}]
    made = http.post("/v1/auth/fields", headers=admin, json={
        "object": object_name, "key": key, "label": "Grade", "type": "single_select",
        "options": options})  # fmt: skip
    assert made.status_code == 201, made.text

    def known() -> bool:
        found = http.get(schema, headers=admin)
        assert found.status_code == 200, found.text
        return key in found.json()["json_schema"]["properties"]["custom_fields"]["properties"]

    assert until(known, timeout=15)
    record = make(http, admin, {key: "a"})
    assert record.status_code == 201, record.text
    assert record.json()["custom_fields"][key] == "a"
    refused = make(http, admin, {key: "z"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == f"custom_fields.{key}"
    assert make(http, admin, {"nope": 1}).status_code == 422
    if listed is not None:
        page = http.get(listed, headers=admin, params={f"cf.{key}": "a"})
        assert page.status_code == 200, page.text
        assert [r["id"] for r in page.json()["data"]] == [record.json()["id"]]
        assert http.get(listed, headers=admin, params={f"cf.{key}": "b"}).json()["data"] == []


def test_a_deleted_fields_values_are_purged_from_every_record(
    http: httpx.Client, admin: dict[str, str], agent: dict[str, str]
) -> None:
    key = f"memo_{os.urandom(3).hex()}"
    field = _define(http, admin, key=key, label="Memo", type="text")
    url = f"/v1/auth/fields/{field['id']}"
    _in_effect(http, admin, key)
    made = [
        http.post(
            "/v1/customers",
            headers=admin,
            json={"name": f"Memo {i}", "custom_fields": {key: f"m{i}"}},
        )  # fmt: skip
        for i in range(3)
    ]
    assert [m.status_code for m in made] == [201, 201, 201], made[0].text
    live = http.post(f"{url}/purge", headers=admin)
    assert live.status_code == 409 and "delete it first" in live.text
    assert http.delete(url, headers=admin).status_code == 204
    assert http.post(f"{url}/purge", headers=agent).status_code == 403
    purged = http.post(f"{url}/purge", headers=admin)
    assert purged.status_code == 200, purged.text
    assert purged.json()["records"] == 3 and purged.json()["field"]["purged_at"] is not None
    assert http.post(f"{url}/purge", headers=admin).json()["records"] == 0
    # Restored, the field is there again, its old values are not.
    assert http.post(f"{url}/restore", headers=admin).status_code == 200
    _in_effect(http, admin, key)

    def gone() -> bool:
        # (the purge wrote in the customer databases: a replica may show it a moment later)
        return all(
            key
            not in http.get(f"/v1/customers/{m.json()['id']}", headers=admin).json()[
                "custom_fields"
            ]
            for m in made
        )

    assert until(gone, timeout=15)
