"""Unique custom fields against the session's stack: one record per value across every
shard, on every write path (create, update, batch, restore, idempotent retries, CSV
import, handles), with the value freed when its record changes it or is deleted
(deployments/_kit/unique_values.py)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from ray import serve

from deployments.customer.schemas import CustomerCreate
from gateway.errors import Conflict, Validation
from gateway.principal import Principal
from shards import ids
from tests.e2e.conftest import until
from tests.e2e.test_custom_fields import OBJECTS

pytestmark = pytest.mark.e2e


def _field(http: httpx.Client, admin: dict[str, str], object_name: str, **body: Any) -> str:
    made = http.post("/v1/auth/fields", headers=admin,
                     json={"object": object_name, "unique": True, **body})  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["unique"] is True
    return str(body["key"])


def _customer(http: httpx.Client, admin: dict[str, str], values: dict[str, Any],
              **headers: str) -> httpx.Response:  # fmt: skip
    body = {"name": f"U {os.urandom(2).hex()}", "custom_fields": values}
    return http.post("/v1/customers", headers={**admin, **headers}, json=body)


def _taken(response: httpx.Response, field: str) -> bool:
    return response.status_code == 409 and [e["field"] for e in response.json()["errors"]] == [
        field
    ]


def test_which_fields_may_be_unique(http: httpx.Client, admin: dict[str, str]) -> None:
    tag = os.urandom(3).hex()
    for body in (
        {"key": f"flag_{tag}", "type": "boolean"},
        {"key": f"memo_{tag}", "type": "long_text"},
        {"key": f"code_{tag}", "type": "text", "default": "same for all"},
    ):
        refused = http.post("/v1/auth/fields", headers=admin, json={
            "object": "customers", "label": "X", "unique": True, **body})  # fmt: skip
        assert refused.status_code == 422, refused.text
    made = http.post("/v1/auth/fields", headers=admin, json={
        "object": "customers", "key": f"plain_{tag}", "label": "P", "type": "text"})  # fmt: skip
    assert made.json()["unique"] is False
    # Set when the field is made: existing records could hold a value twice.
    later = http.patch(f"/v1/auth/fields/{made.json()['id']}", headers=admin,
                       json={"unique": True})  # fmt: skip
    assert later.status_code == 422, later.text


def test_a_unique_value_belongs_to_one_customer_across_shards(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    tag = os.urandom(3).hex()
    tax = _field(http, admin, "customers", key=f"tax_{tag}", label="Tax id", type="text")
    mail = _field(http, admin, "customers", key=f"billing_{tag}", label="Billing", type="email")
    seats = _field(http, admin, "customers", key=f"seats_{tag}", label="Seats", type="number")
    assert until(lambda: _customer(http, admin, {seats: -1}).status_code == 201, timeout=15)

    # Customers land on many shards; each one's value is refused to every other.
    holders = [_customer(http, admin, {tax: f"VN-{tag}-{i}"}).json() for i in range(6)]
    assert len({ids.shard_of(int(h["id"])) for h in holders}) > 1
    for i in range(6):
        again = _customer(http, admin, {tax: f"VN-{tag}-{i}"})
        assert _taken(again, f"custom_fields.{tax}"), again.text
    assert _customer(http, admin, {tax: f"vn-{tag}-0"}).status_code == 201  # text: exact
    # An e-mail is one value whatever its case; a number whatever its spelling.
    billing = _customer(http, admin, {mail: f"Billing.{tag}@Example.COM"})
    assert billing.json()["custom_fields"][mail] == f"billing.{tag}@example.com"
    assert _taken(_customer(http, admin, {mail: f"billing.{tag}@example.com"}),
                  f"custom_fields.{mail}")  # fmt: skip
    assert _customer(http, admin, {seats: 7}).status_code == 201
    assert _taken(_customer(http, admin, {seats: 7.0}), f"custom_fields.{seats}")

    first, second = (f"/v1/customers/{h['id']}" for h in holders[:2])
    value = f"VN-{tag}-0"
    # The holder may send its own value again; another record may not take it.
    assert http.patch(first, headers=admin, json={"custom_fields": {tax: value}}).status_code == 200
    moved = http.patch(second, headers=admin, json={"custom_fields": {tax: value}})
    assert _taken(moved, f"custom_fields.{tax}"), moved.text
    # Changed away, the value is free for the next one that wants it.
    freed = http.patch(first, headers=admin, json={"custom_fields": {tax: f"VN-{tag}-x"}})
    assert freed.status_code == 200, freed.text
    assert (
        http.patch(second, headers=admin, json={"custom_fields": {tax: value}}).status_code == 200
    )
    # A deleted record holds nothing; restored, it must get its values back.
    assert http.delete(second, headers=admin).status_code == 204
    third = _customer(http, admin, {tax: value})
    assert third.status_code == 201, third.text
    restored = http.post(f"{second}/restore", headers=admin)
    assert _taken(restored, f"custom_fields.{tax}"), restored.text
    assert http.get(second, headers=admin).status_code == 404  # still deleted
    assert http.delete(f"/v1/customers/{third.json()['id']}", headers=admin).status_code == 204
    assert http.post(f"{second}/restore", headers=admin).status_code == 200

    # A retried create (same Idempotency-Key) answers with its customer, not a 409.
    key = {"Idempotency-Key": f"unique-{tag}"}
    made = _customer(http, admin, {tax: f"KEY-{tag}"}, **key)
    assert made.status_code == 201, made.text
    retried = http.post("/v1/customers", headers={**admin, **key}, json={
        "name": made.json()["name"], "custom_fields": {tax: f"KEY-{tag}"}})  # fmt: skip
    assert retried.status_code == 201 and retried.json()["id"] == made.json()["id"], retried.text

    # At once, many writers of one value: exactly one gets it.
    with ThreadPoolExecutor(8) as pool:
        racing = list(pool.map(lambda _: _customer(http, admin, {tax: f"RACE-{tag}"}), range(8)))
    assert sorted(r.status_code for r in racing) == [201] + [409] * 7, [r.text for r in racing]
    listed = http.get("/v1/customers", headers=admin, params={f"cf.{tax}": f"RACE-{tag}"})
    assert len(listed.json()["data"]) == 1


def test_a_batch_answers_taken_values_per_item(http: httpx.Client, admin: dict[str, str]) -> None:
    tag = os.urandom(3).hex()
    code = _field(http, admin, "customers", key=f"code_{tag}", label="Code", type="text")
    assert until(lambda: _customer(http, admin, {code: f"C-{tag}-0"}).status_code == 201, 15)
    held = _customer(http, admin, {code: f"C-{tag}-1"}).json()
    batch = http.post("/v1/customers/batch", headers=admin, json={"items": [
        {"op": "create", "data": {"name": "A", "custom_fields": {code: f"C-{tag}-2"}}},
        {"op": "create", "data": {"name": "B", "custom_fields": {code: f"C-{tag}-0"}}},
        {"op": "update", "id": held["id"], "data": {"custom_fields": {code: f"C-{tag}-0"}}},
        {"op": "create", "data": {"name": "C", "custom_fields": {code: f"C-{tag}-3"}}},
    ]})  # fmt: skip
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["status"] for r in results] == [201, 409, 409, 201], results
    assert results[1]["problem"]["errors"][0]["field"] == f"items.1.data.custom_fields.{code}"
    # The refused items claimed nothing: their values are free, the others' are not.
    assert _customer(http, admin, {code: f"C-{tag}-3"}).status_code == 409
    twice = http.post("/v1/customers/batch", headers=admin, json={"items": [
        {"op": "create", "data": {"name": "D", "custom_fields": {code: f"C-{tag}-4"}}},
        {"op": "create", "data": {"name": "E", "custom_fields": {code: f"C-{tag}-4"}}},
    ]})  # fmt: skip
    assert sorted(r["status"] for r in twice.json()["results"]) == [201, 409]


def test_an_import_keeps_unique_values_unique(http: httpx.Client, admin: dict[str, str]) -> None:
    from tests.e2e.test_imports import _csv, _import

    tag = os.urandom(3).hex()
    vat = _field(http, admin, "customers", key=f"vat_{tag}", label="VAT", type="text")
    assert until(lambda: _customer(http, admin, {vat: f"V-{tag}-api"}).status_code == 201, 15)
    until(lambda: http.post("/v1/integration/imports/customers", headers=admin,
                            files={"file": ("h.csv", _csv([["name", f"cf.{vat}"]]), "text/csv")}
                            ).status_code == 202, timeout=15)  # fmt: skip
    rows = [
        ["name", "tags", "external_id", f"cf.{vat}"],
        ["One", tag, f"{tag}-1", f"V-{tag}-1"],
        ["Two", tag, f"{tag}-2", f"V-{tag}-api"],  # line 3: another customer's
        ["Three", tag, f"{tag}-3", f"V-{tag}-1"],  # line 4: line 2's
        ["Four", tag, f"{tag}-4", f"V-{tag}-4"],
    ]
    job = _import(http, admin, _csv(rows))
    assert job["status"] == "succeeded", job
    assert job["result"]["created"] == 2 and job["result"]["failed"] == 2, job["result"]
    errors = http.get(f"/v1/integration/jobs/{job['id']}/errors", headers=admin)
    assert errors.status_code == 200, errors.text
    assert f"cf.{vat}: another record has this value" in errors.text, errors.text
    assert f"cf.{vat}: another row of the file has this value" in errors.text, errors.text
    # Imported again: the rows own their values (the same customers), nothing refused twice.
    again = _import(http, admin, _csv(rows))
    assert again["result"]["unchanged"] == 2 and again["result"]["failed"] == 2, again["result"]
    # An imported value is refused to a customer made by HTTP.
    assert _taken(_customer(http, admin, {vat: f"V-{tag}-4"}), f"custom_fields.{vat}")
    # A customer that took a new value over HTTP is still the one its row names.
    listed = http.get("/v1/customers", headers=admin, params={"tag": tag}).json()["data"]
    one = next(c for c in listed if c["name"] == "One")
    changed = http.patch(f"/v1/customers/{one['id']}", headers=admin,
                         json={"custom_fields": {vat: f"V-{tag}-new"}})  # fmt: skip
    assert changed.status_code == 200, changed.text
    same = _import(http, admin, _csv([rows[0], ["Uno", tag, f"{tag}-1", f"V-{tag}-new"]]))
    assert same["result"]["updated"] == 1 and same["result"]["failed"] == 0, same["result"]


@pytest.mark.parametrize("object_name", ["deals", "products"])
def test_other_objects_keep_unique_values(
    http: httpx.Client, admin: dict[str, str], object_name: str
) -> None:
    _, schema, make = OBJECTS[object_name]
    key = f"ref_{os.urandom(3).hex()}"
    _field(http, admin, object_name, key=key, label="Ref", type="text")

    def known() -> bool:
        found = http.get(schema, headers=admin).json()
        return key in found["json_schema"]["properties"]["custom_fields"]["properties"]

    assert until(known, timeout=15)
    first = make(http, admin, {key: "R-1"})
    assert first.status_code == 201, first.text
    assert _taken(make(http, admin, {key: "R-1"}), f"custom_fields.{key}")
    assert make(http, admin, {key: "R-2"}).status_code == 201


def test_a_handle_caller_meets_the_same_unique_check(
    ray_driver: None, http: httpx.Client, admin: dict[str, str]
) -> None:
    me = http.get("/v1/auth/me", headers=admin).json()
    principal = Principal(user_id=int(me["id"]), role="admin",
                          permissions=frozenset({"customer:read", "customer:write"}))  # fmt: skip
    key = _field(http, admin, "customers", key=f"ssn_{os.urandom(3).hex()}", label="S",
                 type="text")  # fmt: skip
    handle = serve.get_app_handle("customer")

    def made() -> bool:
        try:
            handle.create.remote(principal, CustomerCreate(name="H", custom_fields={key: "S-1"})
                                 ).result()  # fmt: skip
        except Validation:  # the definition has not reached this replica yet
            return False
        return True

    assert until(made, timeout=15)
    with pytest.raises(Conflict) as refused:
        handle.create.remote(principal, CustomerCreate(name="H2", custom_fields={key: "S-1"})
                             ).result()  # fmt: skip
    problem = getattr(refused.value, "cause", refused.value)  # (Ray wraps it)
    assert problem.errors[0]["field"] == f"custom_fields.{key}"
