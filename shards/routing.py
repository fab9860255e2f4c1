"""The shard map in memory: logical shard -> server, and keys -> logical shards."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from shards import ids


class ShardNotFound(LookupError):
    """A key or id names a logical shard that the map does not have."""


def stable_hash(key: str) -> int:
    """A hash that is the same in every process and on every machine.

    Python's built-in `hash()` is salted per process, so it can never route data.
    """
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class ServerSpec:
    name: str
    host: str
    port: int


@dataclass(frozen=True)
class ShardMap:
    """An immutable snapshot of the catalog's `shard_map` at one version."""

    version: int  # the highest version of any row
    shard_to_server: tuple[str, ...]  # index = logical shard number
    servers: dict[str, ServerSpec] = field(default_factory=dict)
    # Each logical shard's row version (a move or failover bumps it); empty: `version`.
    versions: tuple[int, ...] = ()

    @property
    def logical_shards(self) -> int:
        return len(self.shard_to_server)

    def shard_for_key(self, key: str) -> int:
        return stable_hash(key) % self.logical_shards

    def shard_for_id(self, global_id: int) -> int:
        if not ids.is_valid_id(global_id):
            raise ShardNotFound(f"id {global_id} is not a valid id")
        shard = ids.shard_of(global_id)
        if shard >= self.logical_shards:
            raise ShardNotFound(f"id {global_id} names logical shard {shard}, which does not exist")
        return shard

    def server_for_shard(self, shard: int) -> ServerSpec:
        if not 0 <= shard < self.logical_shards:
            raise ShardNotFound(f"logical shard {shard} does not exist")
        return self.servers[self.shard_to_server[shard]]

    def version_of(self, shard: int) -> int:
        return self.versions[shard] if self.versions else self.version

    def route(self, shards: list[int]) -> dict[int, int]:
        """What a call sends its ShardManager: each logical shard it touches and the
        map version it routed by, so a manager can refuse a stale route."""
        return {shard: self.version_of(shard) for shard in shards}

    def shards_on(self, server: str) -> list[int]:
        return [s for s, name in enumerate(self.shard_to_server) if name == server]

    def server_names(self) -> list[str]:
        """Servers that hold at least one logical shard, in a stable order."""
        return sorted({*self.shard_to_server})


def default_layout(logical_shards: int, servers: list[str]) -> list[str]:
    """Contiguous ranges of logical shards per server: the architecture document's
    layout (keys 0,1 -> shard1; 2,3 -> shard2; ...) when 10 shards meet 5 servers."""
    if not servers:
        raise ValueError("at least one shard server is needed")
    return [servers[shard * len(servers) // logical_shards] for shard in range(logical_shards)]
