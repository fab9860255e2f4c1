"""Sharded PostgreSQL: the shard map, ShardManager actors, routing, global ids,
migrations and scatter-gather. Services use `Shards` and `Database`."""

from shards.connections import ReadConn, WriteConn, single_statement
from shards.errors import DatabaseError, ShardUnavailable
from shards.routing import ShardMap, ShardNotFound, stable_hash

__all__ = [
    "DatabaseError",
    "ReadConn",
    "ShardMap",
    "ShardNotFound",
    "ShardUnavailable",
    "WriteConn",
    "single_statement",
    "stable_hash",
]
