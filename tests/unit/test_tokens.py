from __future__ import annotations

import pickle
import time

import jwt
import pytest

from deployments.auth import passwords
from gateway import tokens
from gateway.errors import AppError, NotFound, RateLimited, Unauthenticated
from gateway.principal import Principal

CONFIG = tokens.JwtConfig(secret="s" * 40, issuer="nextflow", audience="nextflow-api", ttl_s=60)


def test_access_token_round_trip() -> None:
    token = tokens.issue_access_token(CONFIG, 7, "agent", ["customer:read"])
    principal = tokens.verify_access_token(CONFIG, token)
    assert principal == Principal(user_id=7, role="agent", permissions=frozenset({"customer:read"}))


@pytest.mark.parametrize(
    "forge",
    [
        lambda c: jwt.encode({**c, "exp": int(time.time()) - 5}, "s" * 40, algorithm="HS256"),
        lambda c: jwt.encode(c, "another secret of enough length!!", algorithm="HS256"),
        lambda c: jwt.encode({**c, "aud": "someone-else"}, "s" * 40, algorithm="HS256"),
        lambda c: jwt.encode({**c, "iss": "evil"}, "s" * 40, algorithm="HS256"),
        lambda c: jwt.encode(c, None, algorithm="none"),
        lambda c: "not.a.jwt",
    ],
)
def test_forged_expired_or_foreign_tokens_are_refused(forge) -> None:  # type: ignore[no-untyped-def]
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
    with pytest.raises(Unauthenticated):
        tokens.verify_access_token(CONFIG, forge(claims))


def test_verified_tokens_check_each_token_once_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tokens.VerifiedTokens(CONFIG, size=2)
    token = tokens.issue_access_token(CONFIG, 7, "agent", ["customer:read"])
    decoded = []
    real = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append(1) or real(*a, **k))

    first = cache.verify(token)
    assert cache.verify(token) == first and first[0].user_id == 7
    assert len(decoded) == 1  # the second request skipped the signature check

    # A token one character away is not a hit: it is verified, and refused.
    header, payload, signature = token.split(".")
    flipped = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    with pytest.raises(Unauthenticated):
        cache.verify(f"{header}.{payload}.{flipped}")
    assert len(decoded) == 2
    # Past its `exp` a cached token is no longer a hit: it is verified again.
    later = time.time() + CONFIG.ttl_s + 1
    monkeypatch.setattr(time, "time", lambda: later)
    cache.verify(token)
    assert len(decoded) == 3


def test_verified_tokens_keep_at_most_size_tokens() -> None:
    cache = tokens.VerifiedTokens(CONFIG, size=2)
    issued = [tokens.issue_access_token(CONFIG, n, "agent", []) for n in range(3)]
    for token in issued:
        cache.verify(token)
    assert list(cache._seen) == issued[1:]


def test_api_keys_split_and_differ() -> None:
    a, b = tokens.new_api_key(), tokens.new_api_key()
    assert a.plaintext != b.plaintext
    assert tokens.split_api_key(a.plaintext) is not None
    prefix, secret = tokens.split_api_key(a.plaintext)  # type: ignore[misc]
    assert prefix == a.prefix and tokens.digest(secret) == a.secret_hash
    assert tokens.split_api_key("nf_short_x") is None
    assert tokens.split_api_key("bearer-something") is None


def test_passwords_use_argon2id() -> None:
    hashed = passwords.hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert passwords.verify_password(hashed, "correct horse battery")
    assert not passwords.verify_password(hashed, "wrong")
    assert not passwords.verify_password(None, "anything")


@pytest.mark.parametrize(
    "error",
    [
        NotFound("gone", [{"field": "id", "message": "x"}]),
        RateLimited("slow down", retry_after=7),
        AppError("boom"),
    ],
)
def test_app_errors_survive_pickling(error: AppError) -> None:
    # They cross Ray between replicas and the gateway by pickling.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.detail, copy.errors, copy.status) == (error.detail, error.errors, error.status)
    assert getattr(copy, "retry_after", None) == getattr(error, "retry_after", None)


def test_principal_require() -> None:
    viewer = Principal(user_id=1, role="viewer", permissions=frozenset({"customer:read"}))
    viewer.require("customer:read")
    with pytest.raises(AppError) as err:
        viewer.require("customer:write")
    assert err.value.status == 403


def test_scopes_team_and_hidden_fields_travel_in_the_token() -> None:
    token = tokens.issue_access_token(
        CONFIG, 7, "agent", ["customer:read", "customer:write"],
        {"customer:read": "team", "customer:write": "own"}, [7, 8, 9], {"customer": ["email"]},
    )  # fmt: skip
    principal = tokens.verify_access_token(CONFIG, token)
    assert principal.scopes == {"customer:read": "team", "customer:write": "own"}
    assert principal.team == frozenset({7, 8, 9})
    assert principal.hidden == {"customer": frozenset({"email"})}
    # A scope outside own / team is not a token this issuer made.
    claims = jwt.decode(token, "s" * 40, algorithms=["HS256"], audience="nextflow-api")
    forged = jwt.encode({**claims, "scp": {"customer:read": "everything"}}, "s" * 40)
    with pytest.raises(Unauthenticated):
        tokens.verify_access_token(CONFIG, forged)


def test_owners_reaches_and_redact() -> None:
    from deployments.customer.schemas import CustomerRead

    agent = Principal(
        user_id=7, role="agent", permissions=frozenset({"customer:read", "customer:write"}),
        scopes={"customer:read": "team", "customer:write": "own"}, team=frozenset({7, 8}),
        hidden={"customer": frozenset({"email", "phone"})},
    )  # fmt: skip
    assert agent.owners("customer:read") == {7, 8}
    assert agent.owners("customer:write") == {7}
    assert agent.owners("deal:read") is None  # not scoped: every record
    assert agent.reaches("customer:read", 8) and not agent.reaches("customer:write", 8)
    assert not agent.reaches("customer:read", None)  # nobody's record: unscoped only
    loner = Principal(user_id=5, role="agent", permissions=frozenset(), scopes=agent.scopes)
    assert loner.owners("customer:read") == {5}  # no team: a team of one
    now = "2026-01-01T00:00:00Z"
    record = CustomerRead.model_validate({
        "id": 1, "name": "n", "email": "a@b.c", "phone": "1", "website": None,
        "industry": None, "tags": [], "custom_fields": {}, "owner_id": 7,
        "external_id": None, "version": 1, "created_at": now, "updated_at": now,
    })  # fmt: skip
    seen = agent.redact("customer", record)
    assert (seen.email, seen.phone, seen.name) == (None, None, "n")
    assert agent.redact("contact", record) is record


def test_every_hidden_field_can_be_null() -> None:
    """Hidden fields are answered as null: each one a role may hide must be nullable in
    its read model, or the response would fail validation (a 500)."""
    import json
    import re
    from pathlib import Path

    from deployments.customer.schemas import ContactRead, CustomerRead
    from deployments.marketing.schemas import LeadRead

    models = {"customer": CustomerRead, "contact": ContactRead, "lead": LeadRead}
    sql = (Path(__file__).parents[2] / "shards/migrations/auth/0103_teams_scopes.sql").read_text()
    hidden = json.loads(re.search(r"SET hidden_fields = '(\{.*?\})'", sql, re.S).group(1))  # type: ignore[union-attr]
    assert hidden
    for kind, fields in hidden.items():
        for name in fields:
            schema = models[kind].model_json_schema()["properties"][name]
            assert {"type": "null"} in schema.get("anyOf", []), (kind, name)
