"""Sealed secrets (deployments/_kit/sealed.py): AES-256-GCM bound to a context, with
key ids for rotation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.settings import StackSettings
from cluster.stack import LocalStack
from deployments._kit.sealed import PREFIX, SecretBox, Unsealable

OLD, NEW = "o" * 40, "n" * 40


@given(st.text())
def test_a_sealed_value_opens_to_itself_and_hides_it(secret: str) -> None:
    box = SecretBox(NEW)
    sealed = box.seal(secret, "t.c")
    assert sealed.startswith(box.current_prefix) and box.open(sealed, "t.c") == secret
    assert len(secret) < 4 or secret not in sealed
    assert box.seal(secret, "t.c") != sealed  # a fresh nonce each time


def test_the_wrong_place_a_tampered_value_or_an_unknown_key_do_not_open() -> None:
    box = SecretBox(NEW)
    sealed = box.seal("whsec_abc", "webhook_subscriptions.secret")
    with pytest.raises(Unsealable):
        box.open(sealed, "users.password")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(Unsealable, match="does not open"):
        box.open(flipped, "webhook_subscriptions.secret")
    with pytest.raises(Unsealable, match="not configured"):
        SecretBox(OLD).open(sealed, "webhook_subscriptions.secret")
    with pytest.raises(Unsealable, match="not sealed"):
        box.open("whsec_plain", "webhook_subscriptions.secret")


def test_rotation_opens_the_previous_key_and_asks_for_resealing() -> None:
    old = SecretBox(OLD).seal("s3cret", "c")
    rotated = SecretBox(NEW, [OLD])
    assert rotated.open(old, "c") == "s3cret"
    assert rotated.needs_resealing(old) and rotated.needs_resealing("whsec_plain")
    assert not rotated.needs_resealing(rotated.seal("s3cret", "c"))
    assert SecretBox(NEW).current_prefix == rotated.current_prefix != SecretBox(OLD).current_prefix
    assert rotated.current_prefix.startswith(PREFIX)


def test_a_secrets_file_from_before_sealing_gets_a_key_and_keeps_its_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nextflow up` on a data folder made by an earlier version: the missing key is
    added, the passwords the servers were initialised with stay."""
    monkeypatch.setenv("NEXTFLOW_DATA_DIR", str(tmp_path))
    for name in ("NEXTFLOW_SECRETS_KEY", "NEXTFLOW_PG_PASSWORD", "NEXTFLOW_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    old = "NEXTFLOW_PG_PASSWORD=pw\nNEXTFLOW_JWT_SECRET=" + "j" * 48 + "\n"
    (tmp_path / "secrets.env").write_text(old)
    stack = LocalStack(StackSettings())
    assert stack.ensure_secrets() is False
    text = (tmp_path / "secrets.env").read_text()
    assert text.startswith(old) and text.count("NEXTFLOW_SECRETS_KEY=") == 1
    settings = stack.app_settings()
    assert settings.pg_password.get_secret_value() == "pw"
    assert len(settings.secrets_key.get_secret_value()) >= 32
    stack.ensure_secrets()  # nothing more to add
    assert (tmp_path / "secrets.env").read_text() == text
