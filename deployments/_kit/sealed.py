"""Secrets the service must read back (a webhook's signing secret: every delivery is
signed with it) are stored sealed, never as plain text: AES-256-GCM under a key
derived with HKDF-SHA256 from `NEXTFLOW_SECRETS_KEY`, which lives outside the
databases (secrets.env locally, a Kubernetes Secret in production). A copy of the
database, a backup or a replica's disk alone reveals no secret.

Stored form: `sealed:v1:<key id>:<base64url(nonce || ciphertext || tag)>`. The key id
names the key that sealed it, so the key can be rotated: put the old key in
`NEXTFLOW_SECRETS_KEY_PREVIOUS`, the new one in `NEXTFLOW_SECRETS_KEY`; values sealed
under either open, and `needs_resealing` tells which to seal again under the new one
(the webhook service does so when a replica starts). The associated data binds a
value to its place (`context`): a sealed value copied into another column does not
open there.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "sealed:v1:"
_NONCE_BYTES = 12


class Unsealable(ValueError):
    """A stored value that no configured key opens (wrong key, or tampered with)."""


def _derive(key: str) -> tuple[str, AESGCM]:
    material = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"nextflow sealed secrets v1"
    ).derive(key.encode())
    key_id = hashlib.sha256(b"key id:" + material).hexdigest()[:12]
    return key_id, AESGCM(material)


class SecretBox:
    def __init__(self, key: str, previous: Iterable[str] = ()) -> None:
        self._current_id, self._current = _derive(key)
        self._keys = dict(_derive(k) for k in previous if k)
        self._keys[self._current_id] = self._current

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._current.encrypt(nonce, plaintext.encode(), context.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{PREFIX}{self._current_id}:{body}"

    def open(self, stored: str, context: str) -> str:
        if not stored.startswith(PREFIX):
            raise Unsealable("the value is not sealed")
        key_id, _, body = stored.removeprefix(PREFIX).partition(":")
        aead = self._keys.get(key_id)
        if aead is None:
            raise Unsealable(f"sealed under key {key_id}, which is not configured")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError):
            raise Unsealable("the sealed value does not open (tampered with?)") from None
        return plain.decode()

    @property
    def current_prefix(self) -> str:
        """How every value sealed under the current key begins."""
        return f"{PREFIX}{self._current_id}:"

    def needs_resealing(self, stored: str) -> bool:
        """True for a plain value or one sealed under another key than the current."""
        return not stored.startswith(self.current_prefix)
