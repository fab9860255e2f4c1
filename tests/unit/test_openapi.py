"""The OpenAPI documents tell the truth about authentication, errors and operation
names (issue 24), checked on the merged document built without a stack, and on one
application's own document as its ingress serves it; every problem `type` the API
writes resolves to its page."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from deployments.api.app import (
    PREFIXES,
    PUBLIC,
    get_problem_type,
    list_problem_types,
    merged_openapi,
    routers_of,
)
from gateway.context import _ETAG
from gateway.errors import CATALOGUE, AppError, NotFound, Validation
from gateway.hardening import HardenedAPI
from gateway.openapi import operation_id
from gateway.problems import _HTTP_TITLES, app_error_response

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def merged() -> dict[str, Any]:
    return merged_openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, o) for p, ops in document["paths"].items() for m, o in ops.items()]


def test_operation_ids_are_unique_readable_names(merged: dict[str, Any]) -> None:
    ids = [o["operationId"] for _, _, o in _operations(merged)]
    assert len(ids) >= 150
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert all(IDENTIFIER.match(i) and "_v1_" not in i for i in ids), ids


def test_credentials_are_security_schemes_and_only_the_public_routes_go_without(
    merged: dict[str, Any],
) -> None:
    schemes = merged["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert merged["security"] == [{"bearer": []}, {"apiKey": []}]
    without = set()
    for method, path, operation in _operations(merged):
        parameters = operation.get("parameters", [])
        headers = {p["name"].lower() for p in parameters if p["in"] == "header"}
        assert not headers & {"authorization", "x-api-key"}, (method, path)
        if operation.get("security") is not None:
            without.add((method, path))
            assert operation["security"] in ([], [{}, {"bearer": []}]), (method, path)
    # The same list the runtime test proves with 401s (tests/e2e/test_authorization.py).
    assert without == {(m, p) for m, p, _ in _operations(merged) if (m, p) in PUBLIC}
    assert ("POST", "/v1/auth/login") in without and ("GET", "/v1/customers") not in without


def test_every_operation_documents_its_errors_as_problem_json(merged: dict[str, Any]) -> None:
    schemas = merged["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for method, path, operation in _operations(merged):
        responses = operation["responses"]
        expected = {"400", "422", "429", "503", "504"}
        if operation.get("security") is None:
            expected |= {"401", "403"}
        if "{" in path:
            expected.add("404")
        if method != "GET":
            expected.add("409")
        assert expected <= set(responses), (method, path, sorted(responses))
        for status in expected:
            (media,) = responses[status]["content"]
            assert media == "application/problem+json", (method, path, status)
        if any(p["name"].lower() == "if-match" for p in operation.get("parameters", [])):
            assert "412" in responses, (method, path)
    assert "HTTPValidationError" not in orjson.dumps(merged).decode()


def _request(path: str) -> Request:
    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    return Request(scope)


def test_the_problem_schema_is_what_the_gateway_sends(merged: dict[str, Any]) -> None:
    schema = {**merged["components"]["schemas"]["Problem"], "additionalProperties": False}
    for error in (
        NotFound("customer not found"),
        Validation("invalid input", [{"field": "name", "message": "required"}]),
    ):
        body = orjson.loads(app_error_response(_request("/v1/customers/1"), error).body)
        jsonschema.validate(body, schema)


def test_an_application_serves_its_own_document_finished_too() -> None:
    """Each application's `/openapi.json` goes through the same finishing as the
    merged one (HardenedAPI.openapi)."""
    _, module = PREFIXES["customer"]
    app: FastAPI = HardenedAPI(title="customers", generate_unique_id_function=operation_id)
    for router in routers_of(module):
        app.include_router(router)
    document = app.openapi()
    assert "bearer" in document["components"]["securitySchemes"]
    operation = document["paths"]["/{customer_id}"]["get"]
    assert operation["operationId"] == "get_customer"
    assert "401" in operation["responses"] and "404" in operation["responses"]
    assert app.openapi() is document  # finished once


def _subclasses(cls: type) -> list[type]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def test_every_problem_type_sent_has_its_page() -> None:
    """Each `type` the API writes resolves: `/errors/<slug>` (the catalogue), with the
    status the error is sent with."""
    import gateway.idempotency
    import gateway.uploads  # noqa: F401  (their errors subclass AppError)

    sent = {(cls.slug, cls.status) for cls in _subclasses(AppError) if cls is not AppError}
    written = re.compile(r'problem\(\s*(?:request|scope, send),\s*(\d{3}),\s*"([a-z-]+)"')
    for folder in ("gateway", "deployments"):
        for source in (ROOT / folder).rglob("*.py"):
            sent |= {(slug, int(status)) for status, slug in written.findall(source.read_text())}
    sent |= {(slug, status) for status, (slug, _) in _HTTP_TITLES.items()}
    assert len(sent) >= 14
    for slug, status in sent:
        assert CATALOGUE.get(slug, (None,))[0] == status, (slug, status)


def test_a_problem_type_page_answers_and_an_unknown_one_is_404() -> None:
    page = orjson.loads(asyncio.run(get_problem_type("stale-version")).body)
    assert page == {**page, "type": "/errors/stale-version", "status": 412}
    assert "ETag" in page["description"]
    listed = orjson.loads(asyncio.run(list_problem_types()).body)["data"]
    assert [p["type"] for p in listed] == [f"/errors/{slug}" for slug in CATALOGUE]
    with pytest.raises(NotFound):
        asyncio.run(get_problem_type("no-such-thing"))


def test_the_errors_page_of_the_docs_lists_the_catalogue() -> None:
    page = (ROOT / "docs" / "errors.md").read_text()
    for slug, (status, _, _) in CATALOGUE.items():
        assert f"| `/errors/{slug}` | {status} |" in page, slug


def test_every_paged_list_declares_its_page_sort_and_filters(merged: dict[str, Any]) -> None:
    """A generated client can page, sort and filter: the parameters `list_params`
    reads from the raw query string are declared (`query_parameters`)."""
    unpaged = {  # short lists: one page, whole
        "/v1/support/sla-policies", "/errors", "/v1/auth/roles", "/v1/auth/teams",
        "/v1/auth/api-keys", "/v1/products/{product_id}/prices",
    }  # fmt: skip
    lists = 0
    for method, path, operation in _operations(merged):
        ok = operation["responses"].get("200", {}).get("content", {}).get("application/json", {})
        if method != "GET" or "Page_" not in ok.get("schema", {}).get("$ref", ""):
            continue
        if path in unpaged:
            continue
        lists += 1
        declared = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
        assert {"limit", "cursor", "sort"} <= set(declared), (path, sorted(declared))
        assert declared["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 200}
        assert all("null" not in str(p["schema"]) for p in declared.values()), path
    assert lists >= 35
    customers = {p["name"]: p for p in merged["paths"]["/v1/customers"]["get"]["parameters"]}
    assert {"name[prefix]", "tag[in]", "owner_id", "created_at[gte]"} <= set(customers)
    assert customers["sort"]["schema"]["enum"] == ["created_at", "-created_at", "name", "-name"]
    assert "count" in customers
    # A list that offers no total does not declare `count` (it would be refused).
    forms = {p["name"] for p in merged["paths"]["/v1/marketing/forms"]["get"]["parameters"]}
    assert "count" not in forms and "limit" in forms
    # A filter whose values are a list of choices says which, comma-separated.
    tickets = {p["name"]: p for p in merged["paths"]["/v1/support/tickets"]["get"]["parameters"]}
    pattern = re.compile(tickets["status[in]"]["schema"]["pattern"])
    assert pattern.match("new,pending") and not pattern.match("new,nope")
    files = {p["name"]: p for p in merged["paths"]["/v1/files"]["get"]["parameters"]}
    assert files["owner_id"]["required"] and files["owner_type"]["required"]


def test_headers_are_declared_as_the_pipeline_reads_and_writes_them(
    merged: dict[str, Any],
) -> None:
    create = merged["paths"]["/v1/customers"]["post"]
    key = next(p for p in create["parameters"] if p["name"] == "Idempotency-Key")
    assert re.match(key["schema"]["pattern"], "6b1f-4c2a") and not re.match(
        key["schema"]["pattern"], "with space"
    )
    assert {"ETag", "Location", "NextFlow-Read-After"} <= set(create["responses"]["201"]["headers"])
    login = merged["paths"]["/v1/auth/login"]["post"]
    assert "Idempotency-Key" not in {p["name"] for p in login.get("parameters", [])}
    update = merged["paths"]["/v1/customers/{customer_id}"]["patch"]
    (if_match,) = [p for p in update["parameters"] if p["name"] == "if-match"]
    for value, accepted in (('"3"', True), ('W/"12"', True), ("*", True), ("3", False)):
        assert bool(re.match(if_match["schema"]["pattern"], value)) is accepted, value
        assert (_ETAG.match(value) is not None or value == "*") is accepted, value
    assert "ETag" in update["responses"]["200"]["headers"]
    assert "Retry-After" in update["responses"]["503"]["headers"]


def test_every_list_answers_one_shape(merged: dict[str, Any]) -> None:
    """No bare arrays: every list is a page (`{"data": [...], "next_cursor": ...}`)."""
    for method, path, operation in _operations(merged):
        for status, response in operation["responses"].items():
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            assert schema.get("type") != "array", (method, path, status)


def test_every_search_spells_its_filters_as_its_list_does(merged: dict[str, Any]) -> None:
    """One filter spelling: a `POST .../search` body's `filter` takes exactly the
    bracketed names its `GET` list declares, and its `sort` the same orders."""
    schemas = merged["components"]["schemas"]
    searches = 0
    for method, path, operation in _operations(merged):
        if method != "POST" or not path.endswith("/search"):
            continue
        searches += 1
        listing = merged["paths"][path.removesuffix("/search")]["get"]
        listed = {p["name"]: p for p in listing["parameters"] if p["in"] == "query"}
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        search = schemas[body["$ref"].rsplit("/", 1)[1]]
        names = set(search["properties"])
        assert names == {"filter", "sort", "limit", "cursor", "count", "view"}, path
        filter_ref = search["properties"]["filter"]["$ref"]
        filters = schemas[filter_ref.rsplit("/", 1)[1]]
        paging = {"limit", "cursor", "count", "sort", "view"}  # (a view: the GET's)
        assert set(filters["properties"]) == set(listed) - paging, path
        assert filters["additionalProperties"] is False
        assert search["properties"]["sort"]["enum"] == listed["sort"]["schema"]["enum"], path
    assert searches >= 2


def test_bodies_the_routes_read_themselves_are_declared(merged: dict[str, Any]) -> None:
    """Uploads and the public capture form stream their bodies past FastAPI; each
    declares what it takes, so a generated client can send it."""

    def content(path: str) -> dict[str, Any]:
        body = merged["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        found: dict[str, Any] = body["content"]
        return found

    files = content("/v1/files")["multipart/form-data"]["schema"]
    assert files["required"] == ["owner_type", "owner_id", "file"]
    assert files["properties"]["file"] == {"type": "string", "format": "binary"}
    assert "lead" in files["properties"]["owner_type"]["enum"]
    imports = content("/v1/integration/imports/customers")
    assert set(imports) == {"multipart/form-data", "text/csv"}
    capture = content("/v1/marketing/capture/{form_key}")
    assert set(capture) == {"application/json", "application/x-www-form-urlencoded"}
    assert capture["application/json"]["schema"]["properties"]["email"]["type"] == [
        "string",
        "null",
    ]
    export = merged["paths"]["/v1/integration/exports/customers"]["post"]
    assert {p["name"] for p in export["parameters"]} >= {"tag[in]", "name[prefix]", "sort"}
    assert not {"limit", "cursor", "count"} & {p["name"] for p in export["parameters"]}
    assert "202" in export["responses"]
    download = merged["paths"]["/v1/integration/jobs/{job_id}/file"]["get"]["responses"]["200"]
    assert "text/csv" in download["content"]


def test_free_text_says_it_takes_no_nul(merged: dict[str, Any]) -> None:
    """PostgreSQL's text holds no NUL (the API answers 422): every free-text string
    the document declares says so, so a generated client or fuzzer does not send one."""
    create = merged["components"]["schemas"]["CustomerCreate"]["properties"]
    assert create["name"]["pattern"] == "^[^\\u0000]*$"
    assert re.match(create["name"]["pattern"], "Acme") and not re.match(
        create["name"]["pattern"], "Ac\x00me"
    )
    assert "pattern" not in create["email"]["anyOf"][0]  # a format of its own
    tag = create["tags"]["items"]["pattern"]
    assert re.match(tag, "vip") and not re.match(tag, "v\x00ip") and not re.match(tag, " ")


def test_a_patch_schema_takes_null_only_where_the_field_may_be_cleared(
    merged: dict[str, Any],
) -> None:
    update = merged["components"]["schemas"]["CustomerUpdate"]["properties"]
    assert update["name"]["type"] == "string" and "default" not in update["name"]
    assert {"type": "null"} in update["email"]["anyOf"]  # may be cleared
