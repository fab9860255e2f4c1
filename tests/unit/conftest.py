"""Unit tests are pure logic: no Ray, no database."""

from __future__ import annotations

import pytest
from hypothesis import settings

# Property tests check results, not speed: on a shared, busy machine one example can
# take longer than hypothesis's default 200 ms deadline (a flaky failure, not a bug).
settings.register_profile("nextflow", deadline=None)
settings.load_profile("nextflow")


@pytest.fixture(autouse=True)
def _forbid_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("unit tests must not start or join a Ray cluster")

    monkeypatch.setattr(ray, "init", refuse)
