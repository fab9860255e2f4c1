"""What every route needs: its service, the caller, version headers, and fast JSON
responses. Routes get them as FastAPI dependencies."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request
from pydantic import BaseModel
from starlette.responses import Response

from cluster import tracing
from gateway import idempotency, metrics, tokens
from gateway.errors import BadRequest, RateLimited, Unauthenticated, Validation
from gateway.listing import (
    ListQuery,
    Q,
    SavedQuery,
    SearchBody,
    may_use,
    parse_list_params,
    search_query,
    with_view,
)
from gateway.pipeline import Pipeline
from gateway.principal import Principal
from gateway.ratelimit import Decision, RateLimiter
from gateway.records import Record
from gateway.tokens import API_KEY_PREFIX, Verified
from shards import consistency
from shards.ids import MAX_ID

log = logging.getLogger("nextflow.gateway")
# A record's id in a route's path: 1..MAX_ID, else 422.
RecordId = Annotated[int, Path(ge=1, le=MAX_ID, description="64-bit id (a string in JSON)")]


async def list_params(request: Request, model: type[Q], without: Iterable[str] = ()) -> Q:
    """The query string as `model` (a list's filters, sort and page), or a 422 naming
    every unknown or invalid parameter (`gateway.listing.parse_list_params`; `without`:
    the fields the route's path gives). With `view=<id>`, a saved view's filters and
    sort come first, under the ones the request gives itself (`with_view`)."""
    params = request.query_params.multi_items()
    chosen = [v for k, v in params if k == "view"]
    if chosen:
        params = [(k, v) for k, v in params if k != "view"]
        params = with_view(params, await _saved_view(request, chosen, model), model)
    return parse_list_params(params, model, without)


async def search_params(request: Request, body: SearchBody, model: type[Q]) -> Q:
    """A `POST .../search` body as `model` (`gateway.listing.search_query`); with
    `"view": "<id>"`, a saved view's filters and sort under the body's own, as
    `?view=` does for the list."""
    chosen: str | None = getattr(body, "view", None)
    view = await _saved_view(request, [chosen], model) if chosen is not None else None
    return search_query(body, model, view)


async def _saved_view(request: Request, chosen: list[str], model: type[ListQuery]) -> SavedQuery:
    """The view `?view=` names, if this caller may use it on this list; else a 422."""

    def refused(message: str) -> Validation:
        return Validation("invalid list parameters", [{"field": "view", "message": message}])

    views = state(request).views
    if model.view_object is None or views is None:
        raise refused("this list has no saved views")
    if len(chosen) > 1:
        raise refused("given more than once")
    if not chosen[0].isdigit() or not 0 < int(chosen[0]) <= MAX_ID:
        raise refused("not a view id")
    view = await views.get(int(chosen[0]))
    principal: Principal | None = getattr(request.state, "principal", None)
    if (
        view is None
        or principal is None
        or not may_use(view.owner_id, view.shared, principal.user_id, principal.team)
    ):
        # Another's private view is not there for this caller.
        raise refused(f"view {chosen[0]} not found")
    if view.object != model.view_object:
        raise refused(f"view {view.id} is a view of {view.object}, not {model.view_object}")
    return view


def state(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.gateway
    return pipeline


async def service(request: Request) -> Any:
    """The service object of the application answering the request (each domain's
    routes type it: `Annotated[CustomerService, Depends(service)]`). A coroutine on
    purpose: FastAPI runs a plain-function dependency in a worker thread, a thread hop
    per request for one attribute read."""
    return request.app.state.service


async def current_principal(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
    nextflow_read_after: Annotated[str | None, Header()] = None,
) -> Principal:
    """The caller, from `Authorization: Bearer <JWT or API key>` or `X-API-Key`
    (`authenticate` does the work; the gRPC servicers call it too)."""

    def on_decision(decision: Decision) -> None:
        request.state.rate_limit_headers = decision.headers()

    principal, caller = await authenticate(
        state(request), authorization, x_api_key, nextflow_read_after, on_decision
    )
    request.state.caller = caller
    request.state.principal = principal  # saved views check whose they are
    await idempotency.claim(request, caller)  # may answer with the stored response
    return principal


async def authenticate(
    st: Pipeline,
    authorization: str | None,
    x_api_key: str | None,
    read_after_token: str | None,
    on_decision: Callable[[Decision], None] | None = None,
) -> tuple[Principal, str]:
    """The caller and its rate-limit key ("u<id>" / "k<id>"), for HTTP and gRPC alike.
    JWTs are verified here, in process; API keys by the pipeline's `api_keys` (a
    short-lived cache in front of the auth database).
    Reads see the caller's own recent writes: the positions the gateway remembered
    for this caller, plus a `NextFlow-Read-After` token the client sends back (from
    another session or device, say). The caller's rate limit is enforced here
    (`on_decision` sees the limiter's decision, allowed or not)."""
    token = x_api_key
    if token is None and authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated("use `Authorization: Bearer <token>`")
        token = credentials.strip()
    if not token:
        raise Unauthenticated("authentication required")
    verified: Verified | None = None
    if token.startswith(API_KEY_PREFIX):
        if st.api_keys is None:
            raise Unauthenticated("API keys are not accepted here")
        principal: Principal = await st.api_keys.verify(token)
    else:
        verified = st.tokens.verify(token)
        principal = verified.principal
    brought: dict[str, int] = {}
    if read_after_token:
        try:
            brought = consistency.decode(read_after_token)
        except consistency.BadToken as exc:
            raise BadRequest(str(exc)) from None
    caller = f"k{principal.api_key_id}" if principal.api_key_id else f"u{principal.user_id}"
    # One Redis round trip: the caller's rate limit, its write positions, and whether
    # its access token was cut off or signed out.
    if verified is None:
        # An API key: its mark is set when it is revoked (ingresses cache keys).
        assert principal.api_key_id is not None
        admitted = await st.admission.check(caller, None, tokens.api_key_mark(principal.api_key_id))
        if admitted.revoked:
            raise Unauthenticated("API key revoked")
    else:
        admitted = await st.admission.check(
            caller, principal.user_id, verified.token_id, verified.session
        )
        cut_off = admitted.cutoff is not None and verified.issued < admitted.cutoff
        if cut_off or admitted.revoked:
            raise Unauthenticated("access token revoked; sign in again")
    if st.limiter is not None:
        judge(st.limiter, caller, admitted.decision, on_decision)
    read_after = consistency.merge(admitted.positions, brought)
    carried = tracing.carrier()  # the request's span, parent of the service's
    if read_after or carried:
        principal = principal.model_copy(update={"read_after": read_after, "trace": carried})
    return principal, caller


async def enforce(request: Request, limiter: RateLimiter, caller: str) -> None:
    def on_decision(decision: Decision) -> None:
        request.state.rate_limit_headers = decision.headers()

    await enforce_limit(limiter, caller, on_decision)


async def enforce_limit(
    limiter: RateLimiter, caller: str, on_decision: Callable[[Decision], None] | None = None
) -> None:
    judge(limiter, caller, await limiter.check(caller), on_decision)


def judge(
    limiter: RateLimiter,
    caller: str,
    decision: Decision | None,
    on_decision: Callable[[Decision], None] | None = None,
) -> None:
    """Tell `on_decision` and refuse with 429 when the limiter said no."""
    if decision is None:
        return
    if on_decision is not None:
        on_decision(decision)
    if not decision.allowed:
        # Keys are "u<id>"/"k<id>" for API callers, "<limiter>:<subject>" otherwise.
        limiter_name = caller.partition(":")[0] if ":" in caller else "api"
        metrics.rate_limited(limiter_name)
        raise RateLimited(
            f"rate limit of {limiter.per_minute} requests per minute exceeded",
            retry_after=decision.retry_after_s,
        )


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

_ETAG = re.compile(r'^\s*(?:W/)?"(\d{1,10})"\s*$')


def if_match(if_match: Annotated[str | None, Header()] = None) -> int | None:
    """The version named by `If-Match: "<version>"` (None when absent or `*`)."""
    if if_match is None or if_match.strip() == "*":
        return None
    found = _ETAG.match(if_match)
    if not found:
        raise BadRequest('If-Match must be an ETag such as "3"')
    return int(found[1])


async def _if_match_header(
    value: Annotated[str | None, Header(alias="if-match")] = None,
) -> int | None:
    return if_match(value)  # a coroutine: no worker-thread hop (see `services`)


IfMatch = Annotated[int | None, Depends(_if_match_header)]


def json(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Serialise with pydantic directly (ids as strings, RFC 3339 times)."""
    return Response(
        model.model_dump_json(),
        status_code=status,
        media_type="application/json",
        headers={**(headers or {}), **_read_after_header(model)},
    )


def no_content(model: BaseModel) -> Response:
    """204 after a write whose record the client does not need (a delete)."""
    return Response(status_code=204, headers=_read_after_header(model))


def _read_after_header(model: BaseModel) -> dict[str, str]:
    # The middleware merges this with the token the request brought.
    if isinstance(model, Record) and model.read_after:
        return {consistency.HEADER: consistency.encode(model.read_after)}
    return {}


def record(model: BaseModel, status: int = 200, location: str | None = None) -> Response:
    """A single versioned record: body plus `ETag` (and `Location` after a create)."""
    headers = {"ETag": f'"{getattr(model, "version")}"'}  # noqa: B009
    if location:
        headers["Location"] = location
    return json(model, status, headers)
