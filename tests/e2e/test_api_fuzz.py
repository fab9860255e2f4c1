"""Schemathesis against the deployed app's live OpenAPI schema, as the admin.

Every operation gets a few generated requests with a fixed seed (hypothesis
`derandomize`), each held to every check schemathesis has (`--checks all`) but those
named in `LEFT_OUT` with the reason: no 5xx, only documented statuses, content types
and headers, responses that match their schemas, invalid input refused, valid input
accepted, credentials not ignored, unsupported methods refused. Reads and creates of
ordinary records get valid (positive) input; the operations that change shared
configuration other tests rely on (the default pipeline, SLA policies, users, queues,
webhooks, forms, roles' keys) only get invalid (negative) input, which must be
refused with a 4xx and change nothing.

`make fuzz-api` runs the same with many more examples per operation
(NEXTFLOW_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from cluster.settings import Settings

pytestmark = pytest.mark.e2e
EXAMPLES = int(os.environ.get("NEXTFLOW_FUZZ_EXAMPLES", "3"))
STATUSES: dict[str, dict[int, int]] = {"positive": {}, "negative": {}}  # answers seen
# Shared configuration, sign-in and the caller's own account: invalid input only.
NEGATIVE_ONLY = (
    "/v1/auth/",
    "/v1/auth/users",
    "/v1/auth/api-keys",
    "/v1/sales/pipelines",
    "/v1/support/sla-policies",
    "/v1/support/queues",
    "/v1/webhooks",
    "/v1/marketing/forms",
    "/v1/marketing/capture/",
    "/v1/notifications/preferences",
    "/v1/support/tickets/sla/sweep",
    "/v1/integration/jobs/",
    "/v1/integration/imports/",
    "/v1/files",
)


# The checks not run, each with why. Every other check schemathesis has runs.
LEFT_OUT: dict[str, str] = {}
load_all_checks()
ALL_CHECKS = {check.__name__: check for check in CHECKS.get_all()}
# What a JSON schema cannot say: which records exist (a deal's `customer_id` naming
# none is a 422 that says so) and how two values compare (a campaign's `end_date`
# before its `start_date`). Only 422s whose every error is one of these pass
# `positive_data_acceptance`; any other refusal of valid input fails it.
_MISSING = re.compile(r"does not exist|not found|no such|end_date is before start_date")


def positive_data_acceptance_but_missing_references(
    ctx: Any, response: Any, case: Any
) -> bool | None:
    if response.status_code == 422:
        errors = response.json().get("errors") or []
        if errors and all(_MISSING.search(str(e.get("message", ""))) for e in errors):
            return None
    accepted: bool | None = ALL_CHECKS["positive_data_acceptance"](ctx, response, case)
    return accepted


RUN = [
    positive_data_acceptance_but_missing_references if name == "positive_data_acceptance"
    else check
    for name, check in ALL_CHECKS.items()
    if name not in LEFT_OUT
]  # fmt: skip


def _modes(method: str, path: str) -> list[GenerationMode]:
    if method == "GET" or not path.startswith(NEGATIVE_ONLY):
        return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return [GenerationMode.NEGATIVE]


def test_no_operation_answers_5xx_or_off_schema(
    serve_app: Settings, http: httpx.Client, admin: dict[str, str]
) -> None:
    base_url = serve_app.serve_url
    spec = http.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    # The caller's credentials are the admin's (or none, for public operations):
    # invented tokens would only be refused with 401 and spend the run on sign-in.
    schema.config.generation.with_security_parameters = False
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        raw = spec["paths"][operation.path][operation.method.lower()]
        for mode in _modes(operation.method.upper(), operation.path):
            if mode is GenerationMode.NEGATIVE and not (
                raw.get("parameters") or raw.get("requestBody")
            ):
                continue  # nothing to make invalid
            # Public operations (security: []) and sign-out (optional credentials: it
            # would sign the admin out) are fuzzed as an anonymous caller.
            caller = admin if raw.get("security") is None else {}
            problem = _fuzz(operation, mode, base_url, caller)
            if problem:
                failures.append(f"{operation.label} [{mode.value}]: {problem}")
    assert operations >= 100
    assert set(LEFT_OUT) <= set(ALL_CHECKS) and len(RUN) >= 10, sorted(ALL_CHECKS)
    sent = sum(sum(by.values()) for by in STATUSES.values())
    print(f"\n{operations} operations, {sent} requests; by status:",
          {mode: dict(sorted(by.items())) for mode, by in STATUSES.items()},
          "; checks:", sorted(c.__name__ for c in RUN))  # fmt: skip
    assert not failures, "\n\n".join(failures)
    # The admin is still the admin: nothing the fuzzer sent locked the suite out.
    assert http.get("/v1/auth/me", headers=admin).json()["role"] == "admin"


def _as_a_client_would(case: Any) -> None:
    """A valid request as a client makes one: no invented server tokens (a cursor or a
    `NextFlow-Read-After` is opaque, issued by the API; one it did not issue is a 400 by
    design: unit-tested, and sent by the negative cases; an `If-Match` is a version
    the client read, and an invented one a 412), and a new `Idempotency-Key`
    per request (the key is unique per request by contract; the generator reuses
    short strings, and a reused key with another body is rightly refused)."""
    for holder in (case.query, case.body if isinstance(case.body, dict) else None):
        if holder:
            holder.pop("cursor", None)
    for name in list(case.headers or {}):
        if name.lower() in ("nextflow-read-after", "if-match"):  # only the API's own
            del case.headers[name]
        elif name.lower() == "idempotency-key":
            case.headers[name] = uuid.uuid4().hex


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, admin: dict[str, str]) -> str:
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the fixed seed: the same requests every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(case: Any) -> None:
        if mode is GenerationMode.POSITIVE:
            _as_a_client_would(case)
        response = case.call(base_url=base_url, headers=admin, timeout=30)
        seen = STATUSES[mode.value]
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=RUN, headers=admin)

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
        return ""
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup is a Base one
        return str(exc)[:3000]
    return ""
