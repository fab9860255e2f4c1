"""Unit tests are pure logic: no Ray, no database."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _forbid_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("unit tests must not start or join a Ray cluster")

    monkeypatch.setattr(ray, "init", refuse)
