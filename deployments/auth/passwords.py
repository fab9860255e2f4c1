"""argon2id password hashing with OWASP's recommended parameters
(m=19 MiB, t=2, p=1). Hashing is CPU work: call it off the event loop."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Verifying against this when the user does not exist keeps response times equal,
# so login timing does not reveal which e-mail addresses have accounts.
_DUMMY_HASH = _hasher.hash("not a real password")


def hash_password(plain: str) -> str:
    return _hasher.hash(plain)


def verify_password(stored_hash: str | None, plain: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, plain) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
