"""The gRPC layer's pure parts: generated code matches the protos, errors map to the
right status codes and rich details, update masks and list requests mean what the
HTTP API means. (tests/e2e/test_grpc.py runs it all against the deployed app.)"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from pydantic import ValidationError

from deployments.customer.app import _WRITABLE as _CUSTOMER_WRITABLE
from deployments.customer.schemas import CustomerCreate, CustomerListQuery, CustomerRead
from gateway import errors
from gateway.rpc import Call, list_query, masked_update, to_proto
from nextflow.v1 import common_pb2, customers_pb2

ROOT = Path(__file__).parents[2]


def test_generated_code_is_what_make_proto_writes(tmp_path: Path) -> None:
    protos = sorted((ROOT / "proto").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "proto"),
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
         *map(str, protos)],
        check=True,
    )  # fmt: skip
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.py*")}
    assert fresh, "protoc wrote nothing"
    for name, text in fresh.items():
        assert (ROOT / name).read_text() == text, f"{name} is stale: run `make proto`"


class Context:
    """The part of a gRPC servicer context that `Call` uses (grpc's interface)."""

    def __init__(self, metadata: list[tuple[str, str]] | None = None) -> None:
        self.metadata = metadata or []
        self.code: grpc.StatusCode | None = None
        self.details = ""
        self.trailers: list[tuple[str, Any]] = [("request_id", "req-1")]  # as Serve sets it

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.metadata

    def trailing_metadata(self) -> list[tuple[str, Any]]:
        return self.trailers

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, trailers: list[tuple[str, Any]]) -> None:
        self.trailers = trailers


def _failed(exc: BaseException) -> tuple[Context, dict[str, Any]]:
    context = Context()
    call = Call(context)
    call.fail(exc)
    call.finish()
    trailers = dict(context.trailers)
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert context.code is not None and status.code == context.code.value[0]
    found: dict[str, Any] = {"trailers": trailers}
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
    return context, found


@pytest.mark.parametrize(
    ("error", "code", "slug"),
    [
        (errors.BadRequest("x"), grpc.StatusCode.INVALID_ARGUMENT, "bad-request"),
        (errors.Validation("x"), grpc.StatusCode.INVALID_ARGUMENT, "validation"),
        (errors.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"),
        (errors.Forbidden("x"), grpc.StatusCode.PERMISSION_DENIED, "forbidden"),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND, "not-found"),
        (errors.Conflict("x"), grpc.StatusCode.FAILED_PRECONDITION, "conflict"),
        (errors.PreconditionFailed("x"), grpc.StatusCode.FAILED_PRECONDITION, "stale-version"),
        (
            errors.RateLimited("x", retry_after=7),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "rate-limited",
        ),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE, "unavailable"),
    ],
)
def test_app_errors_map_to_status_codes(
    error: errors.AppError, code: grpc.StatusCode, slug: str
) -> None:
    context, found = _failed(error)
    assert context.code == code and context.details == "x"
    assert found["ErrorInfo"].reason == slug
    assert found["ErrorInfo"].metadata["status"] == str(error.status)
    assert found["ErrorInfo"].metadata["request_id"] == "req-1"
    if isinstance(error, errors.RateLimited):
        assert found["RetryInfo"].retry_delay.seconds == 7
        assert found["trailers"]["retry-after"] == "7"
    else:
        assert ("RetryInfo" in found) == isinstance(error, errors.Unavailable)


def test_invalid_input_names_fields_and_unknown_errors_leak_nothing() -> None:
    with pytest.raises(ValidationError) as info:
        CustomerCreate.model_validate({"name": "", "email": "nope"})
    context, found = _failed(info.value)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in found["BadRequest"].field_violations} == {"name", "email"}

    context, found = _failed(RuntimeError("password=hunter2 at db.internal:5432"))
    assert context.code == grpc.StatusCode.INTERNAL
    assert "hunter2" not in context.details and "db.internal" not in context.details


def test_if_match_takes_an_etag_or_a_number() -> None:
    assert Call(Context([("if-match", '"4"')])).version() == 4
    assert Call(Context([("if-match", "4")])).version() == 4
    assert Call(Context([("if-match", "*")])).version() is None
    assert Call(Context()).version() is None
    with pytest.raises(errors.BadRequest):
        Call(Context([("if-match", "four")])).version()


def test_update_mask_sets_named_fields_and_clears_unset_ones() -> None:
    message = customers_pb2.Customer(name="New", industry="Retail")
    assert masked_update(
        message, ["name", "email", "tags", "custom_fields"], _CUSTOMER_WRITABLE
    ) == {
        "name": "New",
        "email": None,
        "tags": [],
        "custom_fields": {},
    }
    for paths in (["version"], ["id", "name"], []):
        with pytest.raises(errors.Validation):
            masked_update(message, paths, _CUSTOMER_WRITABLE)


def test_list_requests_use_the_http_parameters() -> None:
    query = list_query(
        common_pb2.ListRequest(
            limit=5, sort="name", count=True, filters={"name[prefix]": "Ac", "tag[in]": "a,b"}
        ),
        CustomerListQuery,
    )
    assert isinstance(query, CustomerListQuery)
    assert (query.limit, query.sort, query.count) == (5, "name", True)
    assert (query.name_prefix, query.tags) == ("Ac", ["a", "b"])
    for request in (
        common_pb2.ListRequest(filters={"colour": "red"}),
        common_pb2.ListRequest(sort="email"),
        common_pb2.ListRequest(limit=201),
    ):
        with pytest.raises(errors.Validation):
            list_query(request, CustomerListQuery)


def test_records_convert_with_their_json_form() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    record = CustomerRead(
        id=2**62, name="Acme", email=None, phone=None, website=None, industry="x",
        tags=["a"], custom_fields={"tier": 2, "vip": True}, owner_id=7, version=3,
        created_at=now, updated_at=now,
    )  # fmt: skip
    message = to_proto(record, customers_pb2.Customer)
    assert message.id == 2**62 and message.owner_id == 7 and not message.HasField("email")
    assert message.created_at.ToDatetime(tzinfo=UTC) == now
    assert dict(message.custom_fields) == {"tier": 2.0, "vip": True}
