"""Schemathesis against the deployed app's live OpenAPI schema, as the admin.

Every operation gets a few generated requests with a fixed seed (hypothesis
`derandomize`): no response may be a 5xx, and every documented response must match
its schema. Reads and creates of ordinary records get valid (positive) input; the
operations that change shared configuration other tests rely on (the default
pipeline, SLA policies, users, queues, webhooks, forms, roles' keys) only get
invalid (negative) input, which must be refused with a 4xx and change nothing.

`make fuzz-api` runs the same with many more examples per operation
(NEXTFLOW_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from cluster.settings import Settings

pytestmark = pytest.mark.e2e
EXAMPLES = int(os.environ.get("NEXTFLOW_FUZZ_EXAMPLES", "3"))
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
    assert not failures, "\n\n".join(failures)
    # The admin is still the admin: nothing the fuzzer sent locked the suite out.
    assert http.get("/v1/auth/me", headers=admin).json()["role"] == "admin"


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
        response = case.call(base_url=base_url, headers=admin, timeout=30)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
        return ""
    except Exception as exc:
        return str(exc)[:3000]
    return ""
