"""`nextflow shards move` against the real Serve application while clients keep
writing to the logical shard being moved, over HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest

from cluster.settings import Settings
from shards import ids

pytestmark = pytest.mark.e2e
NEXTFLOW = str(Path(sys.executable).with_name("nextflow"))
SHARD = 2  # on shard1 in the default layout


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NEXTFLOW, *args], text=True, capture_output=True, timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


@dataclass
class Load:
    """Acknowledged writes of every thread (each thread updates only its customers)."""

    names: dict[int, str] = field(default_factory=dict)  # customer -> last acked name
    contacts: set[int] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def worker(self, base_url: str, headers: dict[str, str], mine: list[int], n: int) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
            step = 0
            while not self.stop.is_set():
                step += 1
                cid = mine[step % len(mine)]
                began = time.monotonic()
                if step % 3 == 0:
                    name = f"t{n}-{step}"
                    r = http.post("/v1/customers", json={"name": name})
                    ok = r.status_code == 201
                    ack = (int(r.json()["id"]), name) if ok else None
                elif step % 3 == 1:
                    name = f"t{n}-{step}-upd"
                    r = http.patch(f"/v1/customers/{cid}", json={"name": name})
                    ok = r.status_code == 200
                    ack = (cid, name) if ok else None
                else:
                    r = http.post(f"/v1/customers/{cid}/contacts", json={"first_name": f"c{step}"})
                    ok = r.status_code == 201
                    ack = None
                with self.lock:
                    self.slowest = max(self.slowest, time.monotonic() - began)
                    if not ok:
                        self.failures.append(f"{r.request.method} {r.request.url.path}: "
                                             f"{r.status_code} {r.text[:200]}")  # fmt: skip
                        return
                    if ack is not None:
                        self.names[ack[0]] = ack[1]
                    elif step % 3 == 2:
                        self.contacts.add(int(r.json()["id"]))


async def _count(s: Settings, table: str, wanted: list[int]) -> dict[str, Counter[int]]:
    found: dict[str, Counter[int]] = {}
    for server, port in (("shard1", s.shard_base_port), ("shard2", s.shard_base_port + 1)):
        conn = await asyncpg.connect(s.dsn_for(s.host, port, "customer"))
        try:
            rows = await conn.fetch(f"SELECT id FROM {table} WHERE id = ANY($1::bigint[])", wanted)
        finally:
            await conn.close()
        found[server] = Counter(r["id"] for r in rows)
    return found


def test_move_a_shard_under_http_load(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    refused = _cli("shards", "move", "99", "--to", "shard2")
    assert refused.returncode == 1
    assert "unknown logical shard 99" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    plan = _cli("shards", "rebalance", "--dry-run")
    assert plan.returncode == 0 and "balanced" in plan.stdout, plan.stdout + plan.stderr

    ours: list[int] = []
    for i in range(400):
        made = http.post("/v1/customers", headers=admin, json={"name": f"Mover {i}"})
        assert made.status_code == 201, made.text
        if ids.shard_of(int(made.json()["id"])) == SHARD:
            ours.append(int(made.json()["id"]))
        if len(ours) == 8:
            break
    assert len(ours) == 8

    load = Load()
    threads = [
        threading.Thread(
            target=load.worker, args=(serve_app.serve_url, admin, ours[i::4], i), daemon=True
        )
        for i in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(1.0)
    began = time.monotonic()
    moved = _cli("shards", "move", str(SHARD), "--to", "shard2")
    took = time.monotonic() - began
    time.sleep(1.0)
    load.stop.set()
    for t in threads:
        t.join(60)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "writes paused" in moved.stdout
    print(f"\n{moved.stdout.strip().splitlines()[-1]}\nCLI move {took:.1f}s; slowest write "
          f"{load.slowest * 1000:.0f} ms; {len(load.names)} customers, "
          f"{len(load.contacts)} contacts acknowledged")  # fmt: skip
    assert not load.failures, load.failures[:5]
    assert load.slowest < 10

    # Every acknowledged write exactly once across both servers; the shard on shard2.
    customers = asyncio.run(_count(serve_app, "customers", list(load.names)))
    for cid in load.names:
        total = customers["shard1"][cid] + customers["shard2"][cid]
        assert total == 1, cid
        if ids.shard_of(cid) == SHARD:
            assert customers["shard2"][cid] == 1
    contacts = asyncio.run(_count(serve_app, "contacts", list(load.contacts)))
    for contact in load.contacts:
        assert (contacts["shard1"][contact], contacts["shard2"][contact]) == (0, 1)

    # Reads through the API see the last acknowledged values.
    for cid in ours:
        got = http.get(f"/v1/customers/{cid}", headers=admin)
        assert got.status_code == 200 and got.json()["name"] == load.names.get(
            cid, got.json()["name"]
        )
    status = _cli("shards", "status")
    assert f"{SHARD} " in status.stdout

    back = _cli("shards", "move", str(SHARD), "--to", "shard1")
    assert back.returncode == 0, back.stdout + back.stderr
    for cid in ours:
        assert http.get(f"/v1/customers/{cid}", headers=admin).status_code == 200
