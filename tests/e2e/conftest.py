"""The real Serve application, deployed from serve_config.yaml by LocalStack on the
session's stack; one instance for the whole session."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import ray

from cluster.settings import Settings

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-for-tests"


@pytest.fixture(scope="session")
def serve_app(stack: object, stack_settings: Settings) -> Settings:
    stack.start_ray()  # type: ignore[attr-defined]
    stack.deploy()  # type: ignore[attr-defined]
    stack.start_watchdog()  # type: ignore[attr-defined]
    nextflow = Path(sys.executable).with_name("nextflow")
    subprocess.run(
        [
            str(nextflow),
            "create-admin",
            "--email",
            ADMIN_EMAIL,
            "--name",
            "Admin",
            "--password-stdin",
        ],
        input=ADMIN_PASSWORD,
        text=True,
        check=True,
        env=os.environ.copy(),
        timeout=60,
    )
    return stack_settings  # the stack fixture tears everything down


@pytest.fixture(scope="module")
def ray_driver(serve_app: Settings) -> Iterator[None]:
    """A Ray driver connected to the session's cluster, for tests that call deployment
    handles or actors directly (one per test module, shut down after it)."""
    os.environ["RAY_AUTH_MODE"] = "token"
    ray.init(address=serve_app.ray_address, namespace="nextflow-tests", log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def http(serve_app: Settings) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_app.serve_url, timeout=30) as client:
        yield client


def login(http: httpx.Client, email: str, password: str) -> dict[str, str]:
    response = http.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    tokens: dict[str, str] = response.json()
    return tokens


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def admin(http: httpx.Client) -> dict[str, str]:
    return bearer(login(http, ADMIN_EMAIL, ADMIN_PASSWORD)["access_token"])


def make_user(http: httpx.Client, admin: dict[str, str], role: str) -> dict[str, str]:
    """A fresh user with `role`; returns its auth header."""
    email = f"{role}-{os.urandom(4).hex()}@example.com"
    password = f"{role}-password-123"
    created = http.post(
        "/v1/auth/users", headers=admin, json={"email": email, "password": password, "role": role}
    )
    assert created.status_code == 201, created.text
    return bearer(login(http, email, password)["access_token"])


class Member:
    """A fresh user with `role`, in team `team` (an id) or none, signed in: `id`,
    `headers`; `sign_in()` again for a token that carries a changed team."""

    def __init__(self, http: httpx.Client, admin: dict[str, str], role: str, team: str | None):
        self.http = http
        self.email = f"{role}-{os.urandom(4).hex()}@example.com"
        self.password = f"{role}-password-123"
        body: dict[str, Any] = {"email": self.email, "password": self.password, "role": role}
        if team is not None:
            body["team_id"] = team
        created = http.post("/v1/auth/users", headers=admin, json=body)
        assert created.status_code == 201, created.text
        self.id = created.json()["id"]
        assert created.json()["team_id"] == team
        self.sign_in()

    def sign_in(self) -> None:
        self.headers = bearer(login(self.http, self.email, self.password)["access_token"])


def team_people(
    http: httpx.Client, admin: dict[str, str], prefix: str, who: dict[str, tuple[str, str | None]]
) -> tuple[dict[str, str], dict[str, Member]]:
    """Teams named by `who`'s values (made fresh, names starting with `prefix`) and a
    `Member` per key, `{"a1": ("agent", "A"), "v": ("viewer", None)}`, each signed in
    once everyone exists (a token lists the team members of its sign-in).
    Returns (team name -> id, key -> member)."""
    tag = os.urandom(4).hex()
    teams: dict[str, str] = {}
    for name in sorted({team for _, team in who.values() if team is not None}):
        made = http.post("/v1/auth/teams", headers=admin, json={"name": f"{prefix}-{name}-{tag}"})
        assert made.status_code == 201, made.text
        teams[name] = made.json()["id"]
    people = {
        key: Member(http, admin, role, None if team is None else teams[team])
        for key, (role, team) in who.items()
    }
    for person in people.values():
        person.sign_in()
    return teams, people


@pytest.fixture(scope="session")
def agent(http: httpx.Client, admin: dict[str, str]) -> dict[str, str]:
    return make_user(http, admin, "agent")


@pytest.fixture(scope="session")
def viewer(http: httpx.Client, admin: dict[str, str]) -> dict[str, str]:
    return make_user(http, admin, "viewer")


async def set_replay(s: Settings, primary_port: int, paused: bool) -> None:
    """Pause or resume WAL replay on the standby of the local shard server whose
    primary listens on `primary_port`."""
    standby = primary_port + s.replica_port_offset
    conn = await asyncpg.connect(s.dsn_for(s.host, standby, "postgres"))
    try:
        await conn.execute(f"SELECT pg_wal_replay_{'pause' if paused else 'resume'}()")
    finally:
        await conn.close()


def until(check: Any, timeout: float = 15.0, every: float = 0.1) -> Any:
    """Poll `check()` until it returns something true, or `timeout` seconds passed;
    its last value (for what follows the stream, a replica, an index...)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)
