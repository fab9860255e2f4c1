"""However many CustomerService replicas run, each PostgreSQL node sees at most the
ShardManager's pool bound (plus its one monitoring connection): the managers, not
the replicas, own the connections."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml

from cluster.settings import Settings
from cluster.stack import LocalStack
from shards.databases import SHARDED_DATABASES

pytestmark = pytest.mark.e2e
REPLICAS = 3
REPO = Path(__file__).resolve().parents[2]


def _scaled_config(target: Path) -> Path:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    (app,) = [a for a in config["applications"] if a["name"] == "customer"]
    for deployment in app["deployments"]:
        if deployment["name"] == "CustomerService":
            deployment["autoscaling_config"].update(
                min_replicas=REPLICAS, initial_replicas=REPLICAS, max_replicas=REPLICAS
            )
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


async def _nextflow_connections(s: Settings) -> dict[int, int]:
    """Connections our managers hold, per primary port (pg_stat_activity)."""
    counts = {}
    for address in s.shard_server_addresses():
        conn = await asyncpg.connect(s.dsn_for(address.host, address.port, "postgres"))
        try:
            counts[address.port] = int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'nextflow-shard%'"
                )
            )
        finally:
            await conn.close()
    return counts


async def _load(base_url: str, headers: dict[str, str], ids: list[str], seconds: float) -> int:
    done = 0
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:

        async def worker(n: int) -> None:
            nonlocal done
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            i = n
            while loop.time() < end:
                if i % 4 == 0:
                    r = await client.post("/v1/customers", json={"name": f"load {n}-{i}"})
                    assert r.status_code == 201, r.text
                else:
                    r = await client.get(f"/v1/customers/{ids[i % len(ids)]}")
                    assert r.status_code == 200, r.text
                done += 1
                i += 1

        await asyncio.gather(*(worker(n) for n in range(48)))
    return done


def test_connections_stay_bounded_with_many_replicas(
    serve_app: Settings, http: httpx.Client, admin: dict[str, str], tmp_path: Path
) -> None:
    s = serve_app
    ids = [
        http.post("/v1/customers", headers=admin, json={"name": f"conn {i}"}).json()["id"]
        for i in range(20)
    ]
    scaled = LocalStack(s, serve_config=_scaled_config(tmp_path / "scaled.yaml"))
    scaled.deploy()
    try:
        status = scaled.serve_status()
        deployments = status["applications"]["customer"]["deployments"]
        assert deployments["CustomerService"]["replica_states"] == {"RUNNING": REPLICAS}

        async def measure() -> tuple[int, dict[int, int]]:
            peak: dict[int, int] = {}

            async def sample() -> None:
                while True:
                    for port, count in (await _nextflow_connections(s)).items():
                        peak[port] = max(peak.get(port, 0), count)
                    await asyncio.sleep(0.2)

            sampler = asyncio.create_task(sample())
            try:
                done = await _load(s.serve_url, admin, ids, seconds=6)
            finally:
                sampler.cancel()
            return done, peak

        done, peak = asyncio.run(measure())
    finally:
        LocalStack(s).deploy()  # back to serve_config.yaml as it is

    print(f"\n{done} requests over {REPLICAS} CustomerService replicas; peak connections {peak}")
    assert done > 100
    bound = s.pool_max_size * len(SHARDED_DATABASES) + 1  # pools + the replica monitor
    assert peak, "no samples"
    for port, count in peak.items():
        assert 1 <= count <= bound, f"{count} connections on :{port}, bound {bound}"
