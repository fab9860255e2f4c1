"""Versioned SQL migrations, applied to every database on every server, idempotently.

Files are `shards/migrations/<source>/<NNNN>_<name>.sql`. Each database records what
it has applied in `schema_migrations` (with a checksum, so an edited, already-applied
file is refused rather than silently skipped). A session advisory lock makes two
concurrent runs safe.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from shards.databases import CATALOG_DATABASES, SHARDED_BASE, SHARDED_DATABASES
from shards.routing import default_layout

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x6E657874666C6F77  # "nextflow"


class MigrationError(RuntimeError):
    pass


Node = tuple[str, str, int]  # (name, host, port)


@dataclass(frozen=True)
class Migration:
    source: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    """One database on one server."""

    server: str
    host: str
    port: int
    database: str
    sources: tuple[str, ...]


def load_migrations(source: str) -> list[Migration]:
    folder = MIGRATIONS_DIR / source
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"migration file name not understood: {path}")
        found.append(Migration(source, int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version in {folder}")
    return found


def plan_targets(catalog: Node, shard_servers: Sequence[Node]) -> list[Target]:
    name, host, port = catalog
    targets = [Target(name, host, port, db, (db,)) for db in CATALOG_DATABASES]
    for name, host, port in shard_servers:
        targets += [Target(name, host, port, db, (SHARDED_BASE, db)) for db in SHARDED_DATABASES]
    return targets


async def ensure_database(admin_dsn: str, database: str) -> bool:
    """Create `database` if it does not exist; True when it was created."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if exists:
            return False
        await conn.execute(f'CREATE DATABASE "{database}"')
        return True
    except asyncpg.DuplicateDatabaseError:  # created by a concurrent run
        return False
    finally:
        await conn.close()


async def apply(conn: asyncpg.Connection, sources: Sequence[str]) -> list[str]:
    """Apply what is missing from `sources` on this connection's database."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                source     text NOT NULL,
                version    integer NOT NULL,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (source, version)
            )"""
        )
        rows = await conn.fetch("SELECT source, version, checksum FROM schema_migrations")
        applied = {(r["source"], r["version"]): r["checksum"] for r in rows}
        done = []
        for source in sources:
            for migration in load_migrations(source):
                key = (migration.source, migration.version)
                if key in applied:
                    if applied[key] != migration.checksum:
                        raise MigrationError(
                            f"{source}/{migration.version:04d}_{migration.name}.sql changed "
                            "after it was applied; add a new migration instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (source, version, name, checksum)"
                        " VALUES ($1, $2, $3, $4)",
                        migration.source,
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                done.append(f"{source}/{migration.version:04d}_{migration.name}")
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def seed_shard_map(
    conn: asyncpg.Connection,
    servers: Sequence[Node],
    logical_shards: int,
    replicas: Sequence[tuple[str, str, str, int]] = (),
) -> str:
    """Write the default layout into an empty `shard_map`; keep an existing one.

    Servers and replicas are registered once. After that the catalog is the truth
    about addresses (a failover moves a server's primary to its replica's address),
    so a later run never overwrites them from settings.
    """
    async with conn.transaction():
        await conn.execute("LOCK TABLE shard_map IN EXCLUSIVE MODE")
        await conn.executemany(
            "INSERT INTO shard_servers (name, host, port) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO NOTHING",
            servers,
        )
        await conn.executemany(
            "INSERT INTO shard_replicas (name, server, host, port) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (name) DO NOTHING",
            replicas,
        )
        existing = await conn.fetchval("SELECT count(*) FROM shard_map")
        if existing:
            if existing != logical_shards:
                raise MigrationError(
                    f"shard_map already has {existing} logical shards but settings ask for "
                    f"{logical_shards}; changing the count needs a reshard, not a migration"
                )
            return f"shard_map kept ({existing} logical shards)"
        shard_names = [name for name, _, _ in servers if name != "catalog"]
        layout = default_layout(logical_shards, shard_names)
        await conn.executemany(
            "INSERT INTO shard_map (shard_key, shard_server, version) VALUES ($1, $2, 1)",
            [(str(shard), server) for shard, server in enumerate(layout)],
        )
        return f"shard_map seeded: {logical_shards} logical shards on {len(shard_names)} servers"


async def migrate_all(
    dsn_for: Callable[[str, int, str], str],
    catalog: Node,
    shard_servers: Sequence[Node],
    logical_shards: int,
    progress: Callable[[str], None] = lambda _: None,
    replicas: Sequence[tuple[str, str, str, int]] = (),
) -> None:
    """Create every database, apply every migration (on primaries: replicas follow
    by streaming), seed the shard map and register the replicas
    (`replicas`: (name, server, host, port))."""
    for target in plan_targets(catalog, shard_servers):
        created = await ensure_database(
            dsn_for(target.host, target.port, "postgres"), target.database
        )
        conn = await asyncpg.connect(dsn_for(target.host, target.port, target.database))
        try:
            done = await apply(conn, target.sources)
            if target.database == "catalog":
                registered = [catalog, *shard_servers]
                progress(await seed_shard_map(conn, registered, logical_shards, replicas))
        finally:
            await conn.close()
        state = "created, " if created else ""
        applied = ", ".join(done) if done else "up to date"
        progress(f"{target.server}/{target.database}: {state}{applied}")
