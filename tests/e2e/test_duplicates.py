"""Likely duplicates of customers and contacts against the session's stack: reported on
create (`?duplicates=warn|reject|ignore`), asked for one record, listed across every
shard, following updates, deletes and restores, within the caller's record scope
(deployments/customer/duplicates/)."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import asyncpg
import httpx
import pytest

from cluster.settings import Settings
from shards import ids
from tests.e2e.conftest import Member, until
from tests.e2e.test_imports import _csv, _import

pytestmark = pytest.mark.e2e


def _digits() -> str:
    return "".join(random.choice("0123456789") for _ in range(9))


def _create(http: httpx.Client, who: dict[str, str], body: dict[str, Any],
            mode: str | None = None, path: str = "/v1/customers") -> httpx.Response:  # fmt: skip
    params = {} if mode is None else {"duplicates": mode}
    return http.post(path, headers=who, json=body, params=params)


def _matches(http: httpx.Client, who: dict[str, str], path: str) -> dict[str, list[str]]:
    """id -> what matched, of a record's likely duplicates."""
    answer = http.get(path, headers=who)
    assert answer.status_code == 200, answer.text
    record = "customer" if "/contacts/" not in path else "contact"
    return {m[record]["id"]: m["matched_on"] for m in answer.json()["data"]}


def _groups(http: httpx.Client, who: dict[str, str], path: str) -> list[tuple[str, set[str]]]:
    """Every group of the duplicates list, page by page (3 a page)."""
    out: list[tuple[str, set[str]]] = []
    cursor = None
    record = "customers" if path == "/v1/customers/duplicates" else "contacts"
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = http.get(path, headers=who, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        for group in body["data"]:
            assert len(group[record]) >= 2, group
            out.append((group["matched_on"], {r["id"] for r in group[record]}))
        cursor = body["next_cursor"]
        if cursor is None:
            return out


def _in_groups(groups: list[tuple[str, set[str]]], kind: str, members: set[str]) -> bool:
    return any(k == kind and members <= found for k, found in groups)


def test_a_create_reports_refuses_or_ignores_likely_duplicates(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    tag = os.urandom(3).hex()
    phone = _digits()
    first = _create(http, admin, {"name": f"Nguyễn Văn Đức {tag} Co., Ltd.",
                                  "email": f"Duc.{tag}@Example.com", "phone": f"+84 {phone}"})
    assert first.status_code == 201, first.text
    a = first.json()["id"]
    # Its keys are written a moment after (the `customer` consumer group).
    name_twin = _create(http, admin, {"name": f"nguyen van duc {tag}"}, "ignore").json()["id"]
    assert until(lambda: a in _matches(http, admin, f"/v1/customers/{name_twin}/duplicates"))
    assert _matches(http, admin, f"/v1/customers/{name_twin}/duplicates")[a] == ["name"]

    # warn (the default): made, and the header names the one it likely duplicates.
    warned = _create(http, admin, {"name": f"Other {tag}", "phone": f"0{phone}"})
    assert warned.status_code == 201, warned.text
    assert a in warned.headers["NextFlow-Duplicates"].split(",")
    # ignore: made, nothing looked up.
    ignored = _create(http, admin, {"name": f"Third {tag}", "phone": phone}, "ignore")
    assert ignored.status_code == 201 and "NextFlow-Duplicates" not in ignored.headers
    # reject: 409 naming each match and what matched, and nothing written.
    refused = _create(http, admin, {"name": f"Zeta {tag}", "email": f" DUC.{tag}@example.COM"},
                      "reject")  # fmt: skip
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["type"] == "/errors/likely-duplicate"
    assert ("email", a) in {(e["field"], e["id"]) for e in problem["errors"]}
    listed = http.get("/v1/customers", headers=admin, params={"name[prefix]": f"Zeta {tag}"})
    assert listed.json()["data"] == []
    # A record unlike any other is made under reject.
    alone = _create(http, admin, {"name": f"Unlike {tag} {os.urandom(4).hex()}"}, "reject")
    assert alone.status_code == 201 and "NextFlow-Duplicates" not in alone.headers
    # A repeat of a rejected-mode create that was made answers with it, not a 409.
    key = {**admin, "Idempotency-Key": f"dup-{tag}"}
    body = {"name": f"Keyed {tag}", "email": f"keyed.{tag}@example.com"}
    made = _create(http, key, body, "reject")
    assert made.status_code == 201
    assert until(lambda: _create(http, admin, body, "reject").status_code == 409)
    again = _create(http, key, body, "reject")
    assert again.status_code == 201 and again.json()["id"] == made.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"

    assert _create(http, admin, {"name": "x"}, "sometimes").status_code == 422


def test_the_duplicates_list_follows_updates_deletes_and_restores(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    tag = os.urandom(3).hex()
    phone = _digits()
    # Enough customers to land on several shards: the list meets them wherever they are.
    made = [_create(http, admin, {"name": f"ACME {tag} Inc.", "phone": f"+1 {phone}"},
                    "ignore").json()["id"] for _ in range(4)]  # fmt: skip
    made.append(_create(http, admin, {"name": f"Acme {tag}"}, "ignore").json()["id"])
    assert len({ids.shard_of(int(i)) for i in made}) > 1
    everyone = set(made)
    assert until(lambda: _in_groups(_groups(http, admin, "/v1/customers/duplicates"), "name",
                                    everyone), timeout=20)  # fmt: skip
    assert _in_groups(_groups(http, admin, "/v1/customers/duplicates"), "phone", set(made[:4]))

    # A phone changed leaves its group; a delete leaves every group; a restore returns.
    moved = http.patch(f"/v1/customers/{made[0]}", headers=admin, json={"phone": _digits()})
    assert moved.status_code == 200, moved.text
    assert until(lambda: not _in_groups(_groups(http, admin, "/v1/customers/duplicates"),
                                        "phone", {made[0], made[1]}))  # fmt: skip
    assert http.delete(f"/v1/customers/{made[4]}", headers=admin).status_code == 204
    assert until(lambda: not _in_groups(_groups(http, admin, "/v1/customers/duplicates"),
                                        "name", {made[4]}))  # fmt: skip
    assert made[4] not in _matches(http, admin, f"/v1/customers/{made[1]}/duplicates")
    assert http.post(f"/v1/customers/{made[4]}/restore", headers=admin).status_code == 200
    assert until(lambda: _in_groups(_groups(http, admin, "/v1/customers/duplicates"), "name",
                                    everyone))  # fmt: skip
    # A bad cursor is a 400, not a 500.
    bad = http.get("/v1/customers/duplicates", headers=admin, params={"cursor": "bm90LW91cnM"})
    assert bad.status_code == 400, bad.text


def test_contacts_match_by_address_anywhere_and_by_name_within_their_customer(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    tag = os.urandom(3).hex()
    acme = _create(http, admin, {"name": f"Acme {tag}"}, "ignore").json()["id"]
    globex = _create(http, admin, {"name": f"Globex {tag}"}, "ignore").json()["id"]

    def contact(customer: str, body: dict[str, Any], mode: str | None = "ignore") -> httpx.Response:
        return _create(http, admin, body, mode, f"/v1/customers/{customer}/contacts")

    ann = contact(acme, {"first_name": "Ann", "last_name": f"Lê {tag}"}).json()["id"]
    ann_twin = contact(acme, {"first_name": "ANN", "last_name": f"le {tag}"}).json()["id"]
    other_ann = contact(globex, {"first_name": "Ann", "last_name": f"Lê {tag}"}).json()["id"]
    mail = contact(acme, {"first_name": "Bo", "email": f"bo.{tag}@example.com"}).json()["id"]
    mail_twin = contact(globex, {"first_name": "Robert", "email": f"BO.{tag}@example.com"})
    mail_twin_id = mail_twin.json()["id"]

    found = until(lambda: _matches(http, admin, f"/v1/customers/contacts/{ann}/duplicates") or None)
    assert found == {ann_twin: ["name"]}  # the Ann of another customer is another person
    assert other_ann not in found
    assert until(lambda: _matches(http, admin, f"/v1/customers/contacts/{mail}/duplicates")
                 == {mail_twin_id: ["email"]})  # fmt: skip
    groups = _groups(http, admin, "/v1/customers/contacts/duplicates")
    assert _in_groups(groups, "name", {ann, ann_twin})
    assert _in_groups(groups, "email", {mail, mail_twin_id})
    assert not _in_groups(groups, "name", {ann, other_ann})
    refused = contact(globex, {"first_name": "Bob", "email": f"bo.{tag}@EXAMPLE.com"}, "reject")
    assert refused.status_code == 409 and refused.json()["type"] == "/errors/likely-duplicate"


def test_duplicates_show_only_records_the_caller_may_read(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    """An agent (customer:read on its team's records; here no team: its own) never
    learns of a customer it may not read, from the header, a 409 or the list."""
    tag = os.urandom(3).hex()
    agent = Member(http, admin, "agent", None)
    email = f"secret.{tag}@example.com"
    theirs = _create(http, admin, {"name": f"Admin's {tag}", "email": email}, "ignore")
    assert theirs.status_code == 201
    mine = _create(http, agent.headers, {"name": f"Agent's {tag}", "email": email}, "ignore")
    assert mine.status_code == 201, mine.text
    mine_id, theirs_id = mine.json()["id"], theirs.json()["id"]
    assert until(lambda: _matches(http, admin, f"/v1/customers/{mine_id}/duplicates")
                 == {theirs_id: ["email"]})  # fmt: skip
    assert until(lambda: _matches(http, admin, f"/v1/customers/{theirs_id}/duplicates")
                 == {mine_id: ["email"]})  # fmt: skip
    assert _matches(http, agent.headers, f"/v1/customers/{mine_id}/duplicates") == {}
    again = _create(http, agent.headers, {"name": f"Again {tag}", "email": email}, "reject")
    assert again.status_code == 409  # its own customer is a match it may see
    assert {e["id"] for e in again.json()["errors"]} == {mine_id}
    groups = _groups(http, agent.headers, "/v1/customers/duplicates")
    assert not any(theirs_id in members for _, members in groups)


def test_an_imports_duplicates_are_found_after_it_and_a_rebuild_finds_older_records(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    tag = os.urandom(3).hex()
    phone = _digits()
    rows = [["name", "email", "phone", "external_id"],
            [f"Imported {tag} GmbH", f"imp.{tag}@example.com", "", f"{tag}-1"],
            [f"imported {tag}", "", f"+49 {phone}", f"{tag}-2"],
            [f"Else {tag}", "", f"0{phone}", f"{tag}-3"]]  # fmt: skip
    job = _import(http, admin, _csv(rows))
    assert job["status"] == "succeeded" and job["result"]["created"] == 3, job
    listed = http.get("/v1/customers", headers=admin, params={"limit": 200}).json()["data"]
    made = {c["external_id"]: c["id"] for c in listed if (c["external_id"] or "").startswith(tag)}
    assert len(made) == 3, listed
    # Written once the import ended (the backlog), like the search index.
    one, two, three = made[f"{tag}-1"], made[f"{tag}-2"], made[f"{tag}-3"]
    assert until(lambda: _matches(http, admin, f"/v1/customers/{one}/duplicates")
                 == {two: ["name"]}, timeout=30)  # fmt: skip
    assert _matches(http, admin, f"/v1/customers/{three}/duplicates") == {two: ["phone"]}

    # Records whose keys are gone (written before duplicates were kept) come back
    # with a rebuild.
    async def forget() -> None:
        for server in serve_app.shard_server_addresses():
            conn = await asyncpg.connect(serve_app.dsn_for(server.host, server.port, "customer"))
            try:
                await conn.execute("DELETE FROM match_keys WHERE record_id = ANY($1::bigint[])",
                                   [int(one), int(two), int(three)])  # fmt: skip
            finally:
                await conn.close()

    asyncio.run(forget())
    assert _matches(http, admin, f"/v1/customers/{one}/duplicates") == {}
    agent = Member(http, admin, "agent", None)
    assert http.post("/v1/customers/duplicates/rebuild", headers=agent.headers).status_code == 403
    rebuilt = http.post("/v1/customers/duplicates/rebuild", headers=admin)
    assert rebuilt.status_code == 202, rebuilt.text
    assert rebuilt.json()["queued"] >= 3
    assert until(lambda: http.get("/v1/customers/duplicates/backlog",
                                  headers=admin).json()["waiting"] == 0, timeout=60)  # fmt: skip
    assert _matches(http, admin, f"/v1/customers/{one}/duplicates") == {two: ["name"]}
