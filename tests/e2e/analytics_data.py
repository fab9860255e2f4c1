"""Generated CRM data written straight into the shard databases (each row on the
server the current shard map names for its logical shard), and plain SQL over the
same rows for ground truth. Used by tests/e2e/test_analytics.py and test_ai.py."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg

from cluster.settings import Settings

T = TypeVar("T")


@dataclass
class Layout:
    """Which (host, port) holds each logical shard, and every server's primary."""

    shard_server: dict[int, str]
    servers: dict[str, tuple[str, int]]

    def shards_on(self, server: str) -> list[int]:
        return sorted(s for s, name in self.shard_server.items() if name == server)


async def layout(s: Settings) -> Layout:
    catalog = s.catalog_address()
    conn = await asyncpg.connect(s.dsn_for(catalog.host, catalog.port, "catalog"))
    try:
        servers = {
            r["name"]: (r["host"], int(r["port"]))
            for r in await conn.fetch("SELECT name, host, port FROM shard_servers")
        }
        rows = await conn.fetch("SELECT shard_key, shard_server FROM shard_map")
    finally:
        await conn.close()
    by_shard = {int(r["shard_key"]): r["shard_server"] for r in rows}
    used = set(by_shard.values())  # the catalog is listed too
    return Layout(by_shard, {k: v for k, v in servers.items() if k in used})


async def on_each_server(
    s: Settings, lay: Layout, database: str, fn: Callable[[asyncpg.Connection, str], Awaitable[T]]
) -> list[T]:
    """`fn(conn, server)` on every shard server's primary."""
    out = []
    for name, (host, port) in sorted(lay.servers.items()):
        conn = await asyncpg.connect(s.dsn_for(host, port, database))
        try:
            out.append(await fn(conn, name))
        finally:
            await conn.close()
    return out


async def wait_replayed(s: Settings, lay: Layout, timeout: float = 20.0) -> None:
    """Until every shard server's standby has replayed what its primary wrote so far."""
    for host, port in lay.servers.values():
        primary = await asyncpg.connect(s.dsn_for(host, port, "postgres"))
        try:
            target = await primary.fetchval("SELECT pg_current_wal_lsn()")
        finally:
            await primary.close()
        replica = await asyncpg.connect(s.dsn_for(host, port + s.replica_port_offset, "postgres"))
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                caught_up = await replica.fetchval(
                    "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target
                )
                if caught_up:
                    break
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"standby of {host}:{port} did not catch up")
                await asyncio.sleep(0.05)
        finally:
            await replica.close()


def money(rng: random.Random) -> Decimal:
    return Decimal(rng.randrange(100, 10_000_000)) / Decimal(10_000)  # 4 places


def instant(rng: random.Random, year: int = 2025) -> datetime:
    start = datetime(year, 1, 1, tzinfo=UTC)
    return start + timedelta(seconds=rng.randrange(0, 365 * 86400))


@dataclass
class Generated:
    owners: list[int]
    deal_ids: list[int] = field(default_factory=list)
    lead_ids: list[int] = field(default_factory=list)


async def generate(
    s: Settings,
    lay: Layout,
    stages: list[dict[str, Any]],
    *,
    seed: int,
    deals: int,
    leads: int,
    tickets: int,
    changes: int,
) -> Generated:
    """Deals, leads (some converted into generated deals), tickets and change-history
    rows, all owned by fresh owner ids, created in 2025 (other tests' rows are not)."""
    rng = random.Random(seed)
    owners = [rng.randrange(10**15, 10**16) for _ in range(3)]
    out = Generated(owners)
    pipeline_id = int(stages[0]["pipeline_id"])

    def shard_of_row() -> int:
        return rng.randrange(len(lay.shard_server))

    deal_rows: dict[str, list[tuple[Any, ...]]] = {}
    for _ in range(deals):
        stage = rng.choice(stages)
        status = stage["kind"]
        created = instant(rng)
        closed = created + timedelta(days=rng.randrange(0, 60)) if status != "open" else None
        row = (
            shard_of_row(), rng.randrange(1, 10**12), f"deal {rng.random():.6f}", money(rng),
            rng.choice(["EUR", "USD"]), pipeline_id, int(stage["id"]), int(stage["probability"]),
            status, closed, rng.choice(owners), created,
        )  # fmt: skip
        deal_rows.setdefault(lay.shard_server[row[0]], []).append(row)

    async def put_deals(conn: asyncpg.Connection, server: str) -> list[int]:
        made = []
        for r in deal_rows.get(server, []):
            made.append(
                await conn.fetchval(
                    """INSERT INTO deals (id, customer_id, name, amount, currency, pipeline_id,
                           stage_id, probability, status, closed_at, owner_id, created_at)
                       VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                       RETURNING id""",
                    *r,
                )
            )
        return made

    for made in await on_each_server(s, lay, "sales", put_deals):
        out.deal_ids.extend(int(d) for d in made)

    lead_rows: dict[str, list[tuple[Any, ...]]] = {}
    for i in range(leads):
        converted = rng.random() < 0.4
        deal = rng.choice(out.deal_ids) if converted and rng.random() < 0.8 else None
        row = (
            shard_of_row(), f"lead-{seed}-{i}@example.com", f"Co {i}", rng.choice(["web", "ads"]),
            "converted" if converted else "new", rng.choice(owners),
            rng.randrange(1, 10**12) if converted else None, deal, instant(rng),
        )  # fmt: skip
        lead_rows.setdefault(lay.shard_server[row[0]], []).append(row)

    async def put_leads(conn: asyncpg.Connection, server: str) -> list[int]:
        made = []
        for r in lead_rows.get(server, []):
            made.append(
                await conn.fetchval(
                    """INSERT INTO leads (id, email, company, source, status, owner_id,
                           converted_customer_id, converted_deal_id, created_at)
                       VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
                    *r,
                )
            )
        return made

    for made in await on_each_server(s, lay, "marketing", put_leads):
        out.lead_ids.extend(int(d) for d in made)

    far = datetime(2099, 1, 1, tzinfo=UTC)  # no SLA sweep flips these flags
    ticket_rows: dict[str, list[tuple[Any, ...]]] = {}
    for _ in range(tickets):
        row = (
            shard_of_row(), rng.randrange(1, 10**12), "printer on fire",
            rng.choice(["low", "normal", "high", "urgent"]),
            rng.choice([*owners, None]), far, far, rng.random() < 0.3, rng.random() < 0.3,
            instant(rng),
        )  # fmt: skip
        ticket_rows.setdefault(lay.shard_server[row[0]], []).append(row)

    async def put_tickets(conn: asyncpg.Connection, server: str) -> None:
        await conn.executemany(
            """INSERT INTO tickets (id, customer_id, subject, priority, assignee_id,
                   first_response_due_at, resolution_due_at, first_response_breached,
                   resolution_breached, created_at)
               VALUES (nextflow_id($1), $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
            ticket_rows.get(server, []),
        )

    await on_each_server(s, lay, "support", put_tickets)

    for database in ("customer", "sales", "marketing", "support"):
        change_rows: dict[str, list[tuple[Any, ...]]] = {}
        for _ in range(changes):
            row = (
                shard_of_row(), rng.choice(["customer", "deal", "lead", "ticket"]),
                rng.randrange(1, 10**12), rng.choice(["created", "updated", "deleted"]),
                rng.choice(owners), instant(rng),
            )  # fmt: skip
            change_rows.setdefault(lay.shard_server[row[0]], []).append(row)

        async def put_changes(
            conn: asyncpg.Connection, server: str, rows: dict[str, list[Any]] = change_rows
        ) -> None:
            await conn.executemany(
                """INSERT INTO record_changes (id, record_type, record_id, action, actor_id,
                       created_at) VALUES (nextflow_id($1), $2, $3, $4, $5, $6)""",
                rows.get(server, []),
            )

        await on_each_server(s, lay, database, put_changes)
    await wait_replayed(s, lay)
    return out


FREE = ["gmail.com", "yahoo.com", "hotmail.com"]
SENIOR_TITLES = ["VP Sales", "Director of IT", "Head of Ops", "CTO"]
JUNIOR_TITLES = ["Intern", "Assistant", "Analyst", "Student"]


def signal_lead(rng: random.Random, tag: str, i: int) -> tuple[dict[str, Any], float]:
    """A lead whose chance to convert follows a known rule: senior titles, company
    e-mail and referrals convert far more often. Returns (columns, probability)."""
    senior = rng.random() < 0.5
    corporate = rng.random() < 0.5
    referral = rng.random() < 0.4
    logit = -3.0 + 3.0 * senior + 2.0 * corporate + 1.5 * referral
    domain = f"{tag}-corp{i % 50}.example" if corporate else rng.choice(FREE)
    lead = {
        "email": f"{tag}-{i}@{domain}",
        "title": rng.choice(SENIOR_TITLES if senior else JUNIOR_TITLES),
        "source": "referral" if referral else rng.choice(["ad", "web_form", "event"]),
        "company": f"Co {i}",
    }
    return lead, 1.0 / (1.0 + math.exp(-logit))


async def generate_leads(
    s: Settings, lay: Layout, *, seed: int, labelled: int, open_leads: int, tag: str
) -> list[int]:
    """`labelled` leads with an outcome drawn from the known rule (converted or
    unqualified) and `open_leads` new ones; returns the open leads' ids."""
    rng = random.Random(seed)
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for i in range(labelled + open_leads):
        lead, p = signal_lead(rng, tag, i)
        status = ("converted" if rng.random() < p else "unqualified") if i < labelled else "new"
        shard = rng.randrange(len(lay.shard_server))
        row = (shard, lead["email"], lead["title"], lead["source"], lead["company"], status)
        rows.setdefault(lay.shard_server[shard], []).append(row)

    async def put(conn: asyncpg.Connection, server: str) -> list[int]:
        made = await conn.fetch(
            """INSERT INTO leads (id, email, title, source, company, status)
               SELECT nextflow_id(r.shard), r.email, r.title, r.source, r.company, r.status
               FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::text[]) AS r (shard, email, title, source, company, status)
               RETURNING id, status""",
            *(list(col) for col in zip(*rows.get(server, []), strict=True)),
        )
        return [int(r["id"]) for r in made if r["status"] == "new"]

    open_ids = [i for ids in await on_each_server(s, lay, "marketing", put) for i in ids]
    await wait_replayed(s, lay)
    return open_ids


async def remove(s: Settings, lay: Layout, owners: list[int], lead_tag: str | None = None) -> None:
    """Delete what `generate` (and `generate_leads` with `lead_tag`) wrote, so later
    tests' lists and counts do not see it."""
    before = datetime(2026, 1, 1, tzinfo=UTC)

    async def sales(conn: asyncpg.Connection, _server: str) -> None:
        await conn.execute(
            "DELETE FROM deals WHERE owner_id = ANY($1::bigint[]) AND created_at < $2",
            owners, before,
        )  # fmt: skip

    async def marketing(conn: asyncpg.Connection, _server: str) -> None:
        await conn.execute(
            """DELETE FROM leads WHERE (owner_id = ANY($1::bigint[]) AND created_at < $2)
                                    OR email LIKE $3""",
            owners, before, f"{lead_tag}-%" if lead_tag else "",
        )  # fmt: skip

    async def support(conn: asyncpg.Connection, _server: str) -> None:
        await conn.execute(
            "DELETE FROM tickets WHERE subject = 'printer on fire' AND created_at < $1", before
        )

    async def changes(conn: asyncpg.Connection, _server: str) -> None:
        await conn.execute(
            "DELETE FROM record_changes WHERE actor_id = ANY($1::bigint[]) AND created_at < $2",
            owners, before,
        )  # fmt: skip

    await on_each_server(s, lay, "sales", sales)
    await on_each_server(s, lay, "marketing", marketing)
    await on_each_server(s, lay, "support", support)
    for database in ("customer", "sales", "marketing", "support"):
        await on_each_server(s, lay, database, changes)
    await wait_replayed(s, lay)
