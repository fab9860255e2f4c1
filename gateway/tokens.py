"""Access tokens (JWT, HS256 pinned), refresh tokens and API keys.

The gateway verifies access tokens in process (`VerifiedTokens`, which checks each
token's signature once); no call to the Auth service is needed for a request
carrying a JWT.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jwt
from pydantic import ValidationError

from gateway.errors import Unauthenticated
from gateway.principal import Principal

ALGORITHM = "HS256"
API_KEY_PREFIX = "nf_"
REFRESH_PREFIX = "rt_"


@dataclass(frozen=True)
class JwtConfig:
    secret: str
    issuer: str
    audience: str
    ttl_s: int


def issue_access_token(
    config: JwtConfig,
    user_id: int,
    role: str,
    permissions: list[str],
    scopes: Mapping[str, str] | None = None,
    team: list[int] | None = None,
    hidden: Mapping[str, list[str]] | None = None,
    session: str | None = None,
) -> str:
    """A signed access token. Besides who and what, it carries how far each permission
    reaches (`scp`: permission -> own / team), the caller's team (`team`: member ids)
    and the fields the role never sees (`hide`), so that services check record-level
    access without asking the Auth service; a change to any of them cuts off tokens
    issued before it (`cutoff_key`). `session` names the sign-in it belongs to (its
    refresh-token family): revoking the session (`session_mark`) refuses the token."""
    now = time.time()
    claims: dict[str, Any] = {
        "iss": config.issuer,
        "aud": config.audience,
        "sub": str(user_id),
        "role": role,
        "perms": sorted(permissions),
        # To the millisecond (a NumericDate may have a fraction, RFC 7519 2): a token
        # taken right after a cutoff (`cutoff_key`) must not look older than it.
        "iat": round(now, 3),
        "exp": int(now) + config.ttl_s,
        "jti": uuid.uuid4().hex,
    }
    if scopes:
        claims["scp"] = dict(scopes)
    if team:
        claims["team"] = sorted(team)
    if hidden:
        claims["hide"] = {kind: sorted(fields) for kind, fields in hidden.items()}
    if session:
        claims["sid"] = session
    return jwt.encode(claims, config.secret, algorithm=ALGORITHM)


def cutoff_key(user_id: int) -> str:
    """Redis key: access tokens of this user issued before its value (epoch seconds,
    with a fraction) are refused (set on deactivation, a role, password or team
    change, and a change to the user's team)."""
    return f"token-cutoff:u{user_id}"


def revoked_key(token_id: str) -> str:
    """Redis key: the access token with this `jti` is refused (its holder signed
    out); it lives until the token would have expired anyway."""
    return f"token-revoked:{token_id}"


def session_mark(session: str) -> str:
    """The id `revoked_key` takes for a whole sign-in (a refresh-token family): set when
    it signs out or a spent refresh token of it comes back, it refuses every access
    token issued to it."""
    return f"session-{session}"


def api_key_mark(key_id: int) -> str:
    """The id `revoked_key` takes for an API key: ingresses cache a checked key, and
    its revocation reaches them through this mark."""
    return f"api-key-{key_id}"


class Verified(NamedTuple):
    principal: Principal
    issued: float  # `iat`, epoch seconds
    token_id: str  # `jti`
    expires: int  # `exp`, epoch seconds
    session: str | None = None  # `sid`: the sign-in (refresh-token family)


def verify_access_token(config: JwtConfig, token: str) -> Principal:
    return _verify(config, token).principal


def verify_access_token_claims(config: JwtConfig, token: str) -> Verified:
    return _verify(config, token)


def _verify(config: JwtConfig, token: str) -> Verified:
    """What a valid token says; `Unauthenticated` for any other."""
    try:
        claims = jwt.decode(
            token,
            config.secret,
            algorithms=[ALGORITHM],
            audience=config.audience,
            issuer=config.issuer,
            options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"]},
        )
        principal = Principal(
            user_id=int(claims["sub"]),
            role=str(claims["role"]),
            permissions=frozenset(claims["perms"]),
            scopes=claims.get("scp", {}),
            team=frozenset(claims.get("team", ())),
            hidden={k: frozenset(v) for k, v in claims.get("hide", {}).items()},
        )
        session = claims.get("sid")
        return Verified(
            principal,
            float(claims["iat"]),
            str(claims["jti"]),
            int(claims["exp"]),
            None if session is None else str(session),
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("access token expired") from None
    except (jwt.InvalidTokenError, KeyError, ValueError, TypeError, ValidationError):
        raise Unauthenticated("invalid access token") from None


class VerifiedTokens:
    """Access tokens this process has verified, so the next request with the very same
    token skips the signature check and claim parsing (a client sends its token on
    every request). A hit needs the exact token string and holds only until the
    token's `exp`; failures are never kept; at most `size` tokens, least recently used
    dropped first. Revocation is unaffected: the cutoff check runs on every request."""

    def __init__(self, config: JwtConfig, size: int = 10_000) -> None:
        self.config = config
        self._size = size
        self._seen: OrderedDict[str, Verified] = OrderedDict()

    def verify(self, token: str) -> Verified:
        """What the token says; `Unauthenticated` for an invalid or expired token."""
        hit = self._seen.get(token)
        if hit is not None and time.time() < hit.expires:
            self._seen.move_to_end(token)
            return hit
        self._seen.pop(token, None)
        verified = _verify(self.config, token)
        self._seen[token] = verified
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return verified


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class NewApiKey:
    prefix: str
    secret_hash: bytes
    plaintext: str


def new_api_key() -> NewApiKey:
    # High-entropy secrets need no slow hash: sha256 is enough and keeps per-request
    # verification cheap. The prefix finds the row; the hash proves the secret.
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewApiKey(prefix, digest(secret), f"{API_KEY_PREFIX}{prefix}_{secret}")


def split_api_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(API_KEY_PREFIX):
        return None
    prefix, sep, secret = key[len(API_KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != 12 or not secret:
        return None
    return prefix, secret
