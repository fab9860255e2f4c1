"""Python callers use deployment handles with the same models as HTTP."""

from __future__ import annotations

import os
import time

import httpx
import pytest
import ray
from ray import serve

from deployments._kit.ingress import APPS
from deployments._kit.timeline import TimelineQuery
from deployments.customer.activities.schemas import ActivityCreate, ActivityRead
from deployments.customer.schemas import CustomerCreate, CustomerListQuery, CustomerRead
from gateway.errors import Forbidden, NotFound, Validation
from gateway.principal import Principal
from shards import ids
from tests.e2e.conftest import until

pytestmark = pytest.mark.e2e


def test_create_and_read_through_handles(
    ray_driver: None, http: httpx.Client, admin: dict[str, str]
) -> None:
    me = http.get("/v1/auth/me", headers=admin).json()
    principal = Principal(
        user_id=int(me["id"]),
        role="admin",
        permissions=frozenset({"customer:read", "customer:write"}),
    )
    handle = serve.get_app_handle("customer")
    created = handle.create.remote(
        principal, CustomerCreate(name="Handle Co", tags=["handle"])
    ).result()
    assert isinstance(created, CustomerRead)

    assert created.read_after  # the write's position, for read-your-writes
    after_write = principal.model_copy(update={"read_after": created.read_after})
    fetched = handle.get.remote(after_write, created.id).result()
    assert fetched.model_dump() == created.model_dump()
    page = handle.list.remote(principal, CustomerListQuery(tags=["handle"], limit=10)).result()
    assert [c.id for c in page.data] == [created.id]

    # The same record over HTTP.
    over_http = http.get(f"/v1/customers/{created.id}", headers=admin).json()
    assert over_http["id"] == str(created.id) and over_http["name"] == "Handle Co"

    with pytest.raises(NotFound):
        handle.get.remote(principal, 12345).result()
    reader = Principal(user_id=1, role="viewer", permissions=frozenset({"customer:read"}))
    with pytest.raises(Forbidden):
        handle.create.remote(reader, CustomerCreate(name="Nope")).result()


def test_serve_status_shows_the_deployments(ray_driver: None) -> None:
    status = serve.status()
    # Every service its own application, each with its one ingress deployment.
    expected = {"api": "ApiGateway", **APPS}
    assert set(expected) <= set(status.applications)
    for name, ingress in expected.items():
        app = status.applications[name]
        assert app.status == "RUNNING", name
        assert set(app.deployments) == {ingress}
        assert app.deployments[ingress].status == "HEALTHY", name


def test_a_killed_shard_manager_comes_back_with_fresh_pools(
    ray_driver: None, http: httpx.Client, admin: dict[str, str]
) -> None:
    made = http.post("/v1/customers", headers=admin, json={"name": "Manager restart"}).json()
    url = f"/v1/customers/{made['id']}"
    assert http.get(url, headers=admin).status_code == 200
    server = "shard1" if ids.shard_of(int(made["id"])) < 5 else "shard2"
    manager = ray.get_actor(f"shard-manager:{server}", namespace="nextflow")
    before = ray.get(manager.stats.remote(), timeout=30)
    assert before["pools"]

    ray.kill(manager, no_restart=False)  # Ray restarts it (max_restarts=-1)
    statuses = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        read = http.get(url, headers=admin)
        write = http.patch(url, headers=admin, json={"name": "After restart"})
        statuses.append((read.status_code, write.status_code))
        # Never a 500: a read is retried, a write in flight fails cleanly with 503.
        assert {read.status_code, write.status_code} <= {200, 503}, statuses
        if (read.status_code, write.status_code) == (200, 200):
            break
        time.sleep(0.5)
    assert statuses[-1] == (200, 200), statuses
    after = ray.get(ray.get_actor(f"shard-manager:{server}", namespace="nextflow").stats.remote())
    assert after["pools"]  # rebuilt in the restarted actor
    assert http.get(url, headers=admin).json()["name"] == "After restart"


def test_activities_timeline_and_custom_fields_through_handles(
    ray_driver: None, http: httpx.Client, admin: dict[str, str]
) -> None:
    """What HTTP does with activities, timelines and custom fields, a Python caller
    does through the customer application's handle, with the same checks."""
    me = http.get("/v1/auth/me", headers=admin).json()
    principal = Principal(
        user_id=int(me["id"]), role="admin",
        permissions=frozenset({"customer:read", "customer:write", "activity:read",
                               "activity:write"}),
    )  # fmt: skip
    key = f"level_{os.urandom(3).hex()}"
    defined = http.post("/v1/auth/fields", headers=admin, json={
        "object": "customers", "key": key, "label": "Level", "type": "number"})  # fmt: skip
    assert defined.status_code == 201, defined.text
    handle = serve.get_app_handle("customer")

    def made() -> CustomerRead | None:
        try:
            return handle.create.remote(
                principal, CustomerCreate(name="Handle Fields", custom_fields={key: 3})
            ).result()
        except Validation:  # the definition has not reached this replica yet
            return None

    customer = until(made, timeout=15)
    assert customer is not None and customer.custom_fields[key] == 3
    with pytest.raises(Validation) as refused:
        handle.create.remote(
            principal, CustomerCreate(name="Bad", custom_fields={key: "three"})
        ).result()
    problem = getattr(refused.value, "cause", refused.value)  # (Ray wraps it)
    assert problem.errors[0]["field"] == f"custom_fields.{key}"

    after = principal.model_copy(update={"read_after": customer.read_after})
    call = handle.create_activity.remote(
        after, ActivityCreate(kind="call", customer_id=customer.id, subject="By handle")
    ).result()
    assert isinstance(call, ActivityRead) and call.customer_id == customer.id
    after = after.model_copy(update={"read_after": call.read_after})
    page = handle.timeline.remote(after, customer.id, TimelineQuery(limit=10)).result()
    assert [i.kind for i in page.data][0] == "call"
    assert {i.kind for i in page.data} >= {"call", "change"}
    viewer = Principal(user_id=1, role="viewer", permissions=frozenset({"customer:read"}))
    with pytest.raises(Forbidden):
        handle.create_activity.remote(
            viewer, ActivityCreate(kind="note", customer_id=customer.id, subject="No")
        ).result()
