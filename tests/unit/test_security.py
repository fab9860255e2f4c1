"""Hardening that needs no stack: token verification, password hashing parameters,
request body models, the security headers, CORS and the request timeout."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from argon2 import Type
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from starlette.responses import Response, StreamingResponse

from cluster.settings import Settings
from deployments.api.app import PREFIXES, merged_openapi, routers_of
from deployments.auth import passwords
from gateway import tokens
from gateway.errors import Unauthenticated
from gateway.hardening import RequestTimeout, SecurityHeaders
from gateway.pipeline import Pipeline, build_api

SECRET = "s" * 40
CONFIG = tokens.JwtConfig(secret=SECRET, issuer="nextflow", audience="nextflow-api", ttl_s=60)


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "nextflow",
        "aud": "nextflow-api",
        "sub": "1",
        "role": "admin",
        "perms": ["user:write"],
        "iat": now,
        "exp": now + 60,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, Any], key: Any, algorithm: str) -> str:
    with warnings.catch_warnings():  # short keys for HS384/512 are the point here
        warnings.simplefilter("ignore")
        return jwt.encode(claims, key, algorithm=algorithm)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _rsa_pem() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.mark.parametrize(
    "token",
    [
        # The algorithm is pinned to HS256: the same secret under another HMAC is refused.
        pytest.param(_sign(_claims(), SECRET, "HS512"), id="hs512"),
        pytest.param(_sign(_claims(), SECRET, "HS384"), id="hs384"),
        # `alg: none` written by hand (no library help), with and without a signature.
        pytest.param(_b64({"alg": "none", "typ": "JWT"}) + "." + _b64(_claims()) + ".", id="none"),
        pytest.param(_b64({"alg": "None"}) + "." + _b64(_claims()) + ".", id="None"),
        # Required claims: no exp, no aud, no iss, no sub.
        pytest.param(jwt.encode(_claims(exp=None), SECRET, algorithm="HS256"), id="no-exp"),
        pytest.param(jwt.encode(_claims(aud=None), SECRET, algorithm="HS256"), id="no-aud"),
        pytest.param(jwt.encode(_claims(iss=None), SECRET, algorithm="HS256"), id="no-iss"),
        pytest.param(jwt.encode(_claims(sub=None), SECRET, algorithm="HS256"), id="no-sub"),
        pytest.param(
            jwt.encode(_claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256"),
            id="not-yet-valid",
        ),
    ],
)
def test_tokens_outside_the_pinned_profile_are_refused(token: str) -> None:
    with pytest.raises(Unauthenticated):
        tokens.verify_access_token(CONFIG, token)


def test_rsa_and_key_confusion_tokens_are_refused() -> None:
    """An RS256 token (someone else's key pair) and the classic confusion: an HS256
    token whose HMAC key is a public key the attacker knows. Neither verifies."""
    private, public = _rsa_pem()
    with pytest.raises(Unauthenticated):
        tokens.verify_access_token(CONFIG, jwt.encode(_claims(), private, algorithm="RS256"))
    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64(_claims())
    import hashlib
    import hmac

    signature = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    forged = f"{header}.{payload}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated):
        tokens.verify_access_token(CONFIG, forged)


def test_argon2id_parameters_meet_owasp_minimum() -> None:
    """OWASP Password Storage Cheat Sheet: argon2id with at least m=19 MiB, t=2, p=1
    (or an equivalent trade of memory for iterations)."""
    hasher = passwords._hasher
    assert hasher.type is Type.ID
    assert hasher.memory_cost >= 19 * 1024
    assert hasher.time_cost >= 2
    assert hasher.parallelism >= 1
    assert hasher.salt_len >= 16
    hashed = passwords.hash_password("correct horse battery staple")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    # A hash made with weaker parameters is upgraded at the next sign-in.
    weak = passwords.PasswordHasher(time_cost=1, memory_cost=8 * 1024).hash("pw")
    assert passwords.needs_rehash(weak)


class Client:
    """Requests straight into an ASGI app (httpx's ASGI transport, no server)."""

    def __init__(self, app: Any, raise_app_exceptions: bool = True) -> None:
        self._app = app
        self._raise = raise_app_exceptions

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self._app, raise_app_exceptions=self._raise)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.request(method, path, **kwargs)

        return asyncio.run(go())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def options(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("OPTIONS", path, **kwargs)


def _settings(**changes: Any) -> Settings:
    return Settings(pg_password="x", jwt_secret=SECRET, secrets_key=SECRET, **changes)  # type: ignore[arg-type]


def _app(**settings: Any) -> FastAPI:
    """The customer application's app, built through the pipeline as its ingress does
    (its routes relative to its prefix, as Serve mounts it)."""
    pipeline = Pipeline(
        jwt=CONFIG,
        limiter=None,
        login_limiter=None,
        sessions=None,  # type: ignore[arg-type]
        redis=None,
    )
    _, module = PREFIXES["customer"]
    return build_api(
        pipeline, title="customers", routers=routers_of(module), settings=_settings(**settings)
    )


def test_every_request_body_model_refuses_unknown_fields() -> None:
    """Mass assignment: a JSON body field the model does not declare is a 422 (the
    schema says `additionalProperties: false`), and no body declares a server-owned
    field."""
    server_owned = {"id", "version", "created_at", "updated_at", "deleted_at", "created_by"}
    spec = merged_openapi()
    schemas = spec["components"]["schemas"]
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema")
            if schema is None:
                continue
            refs = [s["$ref"] for s in [schema, *schema.get("anyOf", [])] if "$ref" in s]
            # A model, or a body the route reads itself, declared inline (capture).
            bodies = [(r.rsplit("/", 1)[1], schemas[r.rsplit("/", 1)[1]]) for r in refs]
            if not refs and schema.get("type") == "object":
                bodies = [("inline", schema)]
            assert bodies, f"{method} {path}: body is not an object"
            for name, body in bodies:
                checked += 1
                assert body.get("additionalProperties") is False, f"{method} {path}: {name}"
                owned = server_owned & set(body.get("properties", {}))
                assert not owned, f"{method} {path}: {name} accepts {owned}"
    assert checked >= 40


def test_security_headers_and_closed_cors() -> None:
    client = Client(_app())
    response = client.get("/health/none-such", headers={"Authorization": "Bearer x"})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in response.headers
    # CORS is closed: a browser's preflight from another origin gets no allowance.
    preflight = client.options(
        "/",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    plain = client.get("/openapi.json", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers
    assert "cache-control" not in plain.headers  # no credentials: cacheable


def test_an_unexpected_error_is_a_bare_500_with_the_security_headers() -> None:
    """An exception no handler expected: Starlette's last-resort handler answers, outside
    every other middleware; the security headers are still there (HardenedAPI)."""
    app = _app(hsts_max_age_s=600)

    async def boom() -> None:
        raise RuntimeError("secret detail: SELECT * FROM users")

    app.add_api_route("/boom/in/the/app", boom)  # no customer route matches it
    response = Client(app, raise_app_exceptions=False).get(
        "/boom/in/the/app", headers={"Authorization": "Bearer x"}
    )
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "secret detail" not in response.text and "SELECT" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["strict-transport-security"].startswith("max-age=600")


def test_cors_and_hsts_when_configured() -> None:
    client = Client(_app(cors_allowed_origins="https://app.example", hsts_max_age_s=31536000))
    allowed = client.options(
        "/",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = client.options(
        "/",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers
    assert (
        client.get("/openapi.json")
        .headers["strict-transport-security"]
        .startswith("max-age=31536000")
    )


def test_a_slow_request_is_504_not_a_hang() -> None:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(5)
        return {"late": "yes"}

    @app.get("/fast")
    async def fast() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/stream")
    async def stream() -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(4):
                await asyncio.sleep(0.1)
                yield b"row\n"

        return StreamingResponse(body(), media_type="text/csv")

    wrapped = SecurityHeaders(RequestTimeout(app, timeout_s=0.2))
    client = Client(wrapped)
    began = time.perf_counter()
    response = client.get("/slow")
    assert time.perf_counter() - began < 2
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/timeout")
    assert response.headers["retry-after"] == "1"
    assert client.get("/fast").json() == {"ok": "yes"}
    # Answered in time, streamed for longer: the whole body arrives.
    assert client.get("/stream").text == "row\n" * 4


def test_json_bodies_are_capped() -> None:
    client = Client(_app(max_body_bytes=2048))
    response = client.post(
        "/",
        content=b'{"name": "' + b"x" * 4096 + b'"}',
        headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield b'{"name": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}'

    streamed = client.post(
        "/",
        content=chunks(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
    )
    assert streamed.status_code == 413
    assert streamed.json()["type"].endswith("/too-large")
    assert streamed.headers["x-content-type-options"] == "nosniff"


@pytest.mark.asyncio
async def test_the_rate_limiter_without_redis_fails_open_or_closed_as_configured() -> None:
    import socket

    import redis.asyncio as aioredis

    from gateway.errors import Unavailable
    from gateway.ratelimit import RateLimiter

    with socket.socket() as s:  # a port nothing listens on: Redis is "down"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = aioredis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    try:
        assert await RateLimiter(client, 60, 5).check("u1") is None  # open: let through
        with pytest.raises(Unavailable):
            await RateLimiter(client, 60, 5, fail_open=False).check("u1")
    finally:
        await client.aclose()
