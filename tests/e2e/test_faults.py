"""Faults caused for real under a concurrent write load (threads creating customers,
each with its own Idempotency-Key, retrying with it as a careful client does):

- Redis stopped: the API keeps serving (the rate limiter fails open by default,
  idempotency keys live in PostgreSQL), `/ready` says "degraded", and everything
  recovers by itself once Redis is back: the limiter applies again and the outbox
  relays publish the events of the writes made meanwhile;
- a ShardManager actor killed: writes in flight fail fast with 503 and are retried,
  Ray restarts the actor, writes resume;
- a CustomerService replica killed: Serve starts another, creates go on (a request
  whose replica died answers 503, never 500).

Either way every acknowledged write is there exactly once afterwards
(docs/reliability.md)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

import httpx
import pytest
import ray
import redis as redis_client

from cluster.settings import Settings
from deployments._kit.events import EVENT_STREAM, Event
from shards import ids

pytestmark = pytest.mark.e2e
WRITERS = 4


class Writers:
    """Threads creating customers, each write with its own Idempotency-Key, retried
    with the same key on a 5xx or a connection error (as a careful client does), until
    acknowledged or given up."""

    def __init__(self, base_url: str, headers: dict[str, str], tag: str) -> None:
        self.base_url, self.headers, self.tag = base_url, headers, tag
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acknowledged: dict[str, str] = {}  # name -> id
        self.acknowledged_at: dict[str, float] = {}  # name -> monotonic time
        self.statuses: list[tuple[float, int]] = []  # (time, status) of every answer
        self.slowest_s = 0.0
        self.unexpected: list[str] = []  # answers other than 201 or a retryable failure
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(WRITERS)]

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                name = f"{self.tag}-{index}-{n}"
                key = str(uuid.uuid4())
                for _ in range(20):
                    started = time.monotonic()
                    try:
                        answer = client.post(
                            "/v1/customers",
                            headers={**self.headers, "Idempotency-Key": key},
                            json={"name": name, "tags": [self.tag]},
                        )
                        status = answer.status_code
                    except httpx.HTTPError:
                        status = 0
                    with self.lock:
                        self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                        self.statuses.append((time.monotonic(), status))
                    if status == 201:
                        with self.lock:
                            self.acknowledged[name] = answer.json()["id"]
                            self.acknowledged_at[name] = time.monotonic()
                        break
                    if status not in (0, 409, 502, 503, 504):  # checked by the test
                        with self.lock:
                            self.unexpected.append(f"{status}: {answer.text[:300]}")
                        return
                    time.sleep(0.2)

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def served_between(self, start: float, end: float) -> list[int]:
        with self.lock:
            return [s for t, s in self.statuses if start <= t <= end]


def _all_tagged(http: httpx.Client, headers: dict[str, str], tag: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"tag": tag, "limit": 200}
    while True:
        page = http.get("/v1/customers", headers=headers, params=params).json()
        found += page["data"]
        if not page.get("next_cursor"):
            return found
        params["cursor"] = page["next_cursor"]


def explain(unexpected: list[str]) -> str:
    """The unexpected answers, with the stack's log lines naming their request ids
    (the stack and its logs are gone once the session ends)."""
    import glob
    import re

    ids = re.findall(r'"request_id":"([0-9a-f-]+)"', " ".join(unexpected))
    logs = os.path.join(os.environ.get("NEXTFLOW_DATA_DIR", "/nonexistent"), "ray",
                        "session_latest", "logs", "*")  # fmt: skip
    lines = []
    for path in glob.glob(logs):
        try:
            with open(path, errors="replace") as f:
                lines += [line.strip()[:600] for line in f if any(i in line for i in ids)]
        except OSError:
            continue
    return "\n".join([*unexpected, *lines[:30]])


def _exactly_once(http: httpx.Client, headers: dict[str, str], writers: Writers) -> None:
    """No answer but 201 or a retryable failure; every acknowledged create stored
    once, with the id it was acknowledged with; nothing stored twice."""
    assert not writers.unexpected, explain(writers.unexpected)
    stored = _all_tagged(http, headers, writers.tag)
    names = [c["name"] for c in stored]
    assert len(names) == len(set(names)), "a write was applied twice"
    by_name = {c["name"]: c["id"] for c in stored}
    for name, customer_id in writers.acknowledged.items():
        assert by_name.get(name) == customer_id, name
    assert len(writers.acknowledged) > 10


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_without_redis_the_api_keeps_serving_and_loses_nothing(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings, stack: Any
) -> None:
    tag = "redis" + os.urandom(3).hex()
    redis = stack.redis()
    with Writers(serve_app.serve_url, admin, tag) as writers:
        time.sleep(2)
        redis.stop()
        stopped_at = time.monotonic()
        try:
            assert not redis.is_running()
            ready = _wait(
                lambda: (
                    (r := http.get("/ready")).status_code == 200
                    and r.json()["status"] == "degraded"
                    and r
                ),
                30,
                "/ready to say degraded",
            )
            assert ready.json()["checks"]["redis"].startswith("unavailable")
            time.sleep(4)
            # Reads and writes go on without Redis.
            some = next(iter(writers.acknowledged.values()))
            assert http.get(f"/v1/customers/{some}", headers=admin).status_code == 200
            during = writers.served_between(stopped_at + 1, time.monotonic())
        finally:
            redis.start()
        restarted_at = time.monotonic()
        _wait(lambda: http.get("/ready").json().get("status") == "ready", 60, "/ready")
        time.sleep(2)
    after = writers.served_between(restarted_at + 5, time.monotonic())

    assert during and during.count(201) >= len(during) // 2, during
    assert writers.slowest_s < 30  # nothing hung past the request timeout
    assert 201 in after or not after

    _exactly_once(http, admin, writers)

    # The rate limiter and the event relays work again: a new customer's event (and
    # those of the writes made while Redis was down) reach the stream.
    answer = http.get("/v1/customers", headers=admin, params={"limit": 1})
    assert answer.status_code == 200 and "ratelimit-remaining" in {
        h.lower() for h in answer.headers
    }
    made = http.post("/v1/customers", headers=admin, json={"name": f"{tag}-after"}).json()
    wanted = {made["id"], *writers.acknowledged.values()}
    stream = redis_client.Redis.from_url(serve_app.redis_url)
    try:

        def published() -> bool:
            seen = set()
            for _, fields in stream.xrange(EVENT_STREAM, "-", "+"):
                event = Event.model_validate_json(fields[b"event"])
                if event.type == "customer.created":
                    seen.add(str(event.aggregate_id))
            return wanted <= seen

        _wait(published, 60, "the customers' events on the stream")
    finally:
        stream.close()


def test_a_shard_manager_killed_under_load_loses_nothing(
    ray_driver: None, http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    tag = "mgr" + os.urandom(3).hex()
    with Writers(serve_app.serve_url, admin, tag) as writers:
        _wait(lambda: len(writers.acknowledged) >= 8, 60, "the first writes")
        some = next(iter(writers.acknowledged.values()))
        server = "shard1" if ids.shard_of(int(some)) < 5 else "shard2"
        manager = ray.get_actor(f"shard-manager:{server}", namespace="nextflow")
        ray.kill(manager, no_restart=False)  # Ray restarts it (max_restarts=-1)
        killed_at = time.monotonic()
        # Writes to that server resume by themselves.
        _wait(
            lambda: any(
                ids.shard_of(int(i)) // 5 == int(server[-1]) - 1
                for n, i in list(writers.acknowledged.items())
                if writers.acknowledged_at.get(n, 0.0) > killed_at + 1
            ),
            90,
            f"an acknowledged write on {server} after the kill",
        )
        time.sleep(1)
    assert writers.slowest_s < 30  # failed fast, never hung past the request timeout
    _exactly_once(http, admin, writers)


def test_a_customer_service_replica_killed_under_load_loses_nothing(
    ray_driver: None, http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    from ray.util.state import list_actors

    def replicas() -> list[Any]:
        return list_actors(
            address=serve_app.dashboard_url,
            filters=[
                ("class_name", "=", "ServeReplica:customer:CustomerService"),
                ("state", "=", "ALIVE"),
            ],  # fmt: skip
        )

    tag = "rep" + os.urandom(3).hex()
    with Writers(serve_app.serve_url, admin, tag) as writers:
        _wait(lambda: len(writers.acknowledged) >= 8, 60, "the first writes")
        (victim, *_) = replicas()
        ray.kill(ray.get_actor(victim.name, namespace=victim.ray_namespace), no_restart=True)
        killed_at = time.monotonic()
        # Serve starts another replica; creates are acknowledged again.
        try:
            _wait(
                lambda: any(t > killed_at + 1 for t in list(writers.acknowledged_at.values())),
                120,
                "an acknowledged write after the kill",
            )
        except AssertionError:
            since = [(round(t - killed_at, 1), s) for t, s in writers.statuses if t > killed_at]
            raise AssertionError((explain(writers.unexpected), since[:10], since[-10:])) from None
        _wait(lambda: any(r.actor_id != victim.actor_id for r in replicas()), 120,
              "a new replica")  # fmt: skip
        time.sleep(1)
    assert writers.slowest_s < 30  # failed fast, never hung past the request timeout
    _exactly_once(http, admin, writers)


def _catalog(settings: Settings, sql: str, *args: Any) -> Any:
    """Run one statement on the catalog database; its first row."""
    import asyncio

    import asyncpg

    async def run() -> Any:
        catalog = settings.catalog_address()
        conn = await asyncpg.connect(settings.dsn_for(catalog.host, catalog.port, "catalog"))
        try:
            return await conn.fetchrow(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_a_cut_silent_or_slow_network_to_a_primary_fails_fast_and_heals(
    ray_driver: None, http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    """A TCP proxy between shard2's ShardManager and its primary (the catalog names the
    proxy as the primary's address): connections cut, then a network gone silent
    (nothing passes, nothing is refused), then a slow one. Writes to shard2 fail fast
    with 503 + Retry-After while it is cut or silent (the manager's probe notices
    within its 5 s timeout and drops the dead connections; they never wait for the
    request timeout), shard1's writes go on, and shard2's resume by themselves once the
    network heals; every acknowledged write is stored exactly once."""
    from tests.tcp_proxy import TcpProxy

    server = "shard2"
    host, port = _catalog(serve_app, "SELECT host, port FROM shard_servers WHERE name = $1", server)
    proxy = TcpProxy(host, port).start()
    tag = "net" + os.urandom(3).hex()

    def on_shard2_since(t: float) -> bool:
        return any(
            ids.shard_of(int(i)) // 5 == 1 and writers.acknowledged_at.get(n, 0.0) > t
            for n, i in list(writers.acknowledged.items())
        )

    def fault(start: float) -> list[int]:
        return writers.served_between(start, time.monotonic())

    _catalog(serve_app, "UPDATE shard_servers SET port = $2 WHERE name = $1", server, proxy.port)
    try:
        with Writers(serve_app.serve_url, admin, tag) as writers:
            # The manager re-reads the catalog every few seconds: writes then pass the proxy.
            _wait(lambda: proxy.links > 0, 30, "the manager to connect through the proxy")
            _wait(lambda: on_shard2_since(time.monotonic() - 1), 30, "writes through the proxy")
            on_shard1 = _wait(
                lambda: next(
                    (i for i in list(writers.acknowledged.values()) if ids.shard_of(int(i)) < 5),
                    None,
                ),
                30,
                "a customer on shard1",
            )

            def shard1_writes() -> int:
                """A write to shard1 while shard2's link is down: it goes on."""
                url = f"/v1/customers/{on_shard1}"
                return http.patch(url, headers=admin, json={"industry": tag}).status_code

            proxy.cut()
            cut_at = time.monotonic()
            time.sleep(2)
            shard1_during_cut = shard1_writes()
            time.sleep(4)
            during_cut = fault(cut_at + 1)
            proxy.heal()
            healed_at = time.monotonic()
            _wait(lambda: on_shard2_since(healed_at), 60, "shard2's writes after the cut")

            slowest_before = writers.slowest_s
            proxy.silence()
            silent_at = time.monotonic()
            time.sleep(9)
            shard1_during_silence = shard1_writes()
            time.sleep(3)
            during_silence = fault(silent_at + 8)  # after the probe's 5 s timeout
            proxy.heal()
            healed_at = time.monotonic()
            _wait(lambda: on_shard2_since(healed_at), 60, "shard2's writes after the silence")

            proxy.delay(0.05)
            slow_at = time.monotonic()
            _wait(lambda: on_shard2_since(slow_at), 60, "shard2's writes over a slow network")
            proxy.heal()
    finally:
        _catalog(serve_app, "UPDATE shard_servers SET port = $2 WHERE name = $1", server, port)
        time.sleep(6)  # the manager goes back to the primary itself
        proxy.stop()

    # Cut or silent: shard2's writes answered 503, shard1's went on. (The writers'
    # own answers during a fault may all be 503s: a writer retries its shard2 create
    # with the same key, which places it on shard2 again.)
    assert 503 in during_cut and shard1_during_cut == 200, (during_cut, shard1_during_cut)
    assert 503 in during_silence and shard1_during_silence == 200, shard1_during_silence
    # Silent: writes in flight waited at most for the probe's timeout, never for the
    # request timeout (25 s: a 504); none was lost or applied twice.
    assert 504 not in during_silence
    assert writers.slowest_s < 15, (slowest_before, writers.slowest_s)
    _exactly_once(http, admin, writers)
    # The manager is back on the real primary and writes there.
    made = http.post("/v1/customers", headers=admin, json={"name": f"{tag}-after"})
    assert made.status_code == 201
