"""64-bit global ids that carry their logical shard, so any id routes with no lookup.

Layout (Instagram/Snowflake style, always positive in a signed bigint):

    | 0 | 41 bits: milliseconds since EPOCH_MS | 10 bits: logical shard | 12 bits: sequence |

PostgreSQL makes the ids (`nextflow_id(shard)` in every sharded database, see the
migrations), so ids stay unique however many processes write. This module reads them.
"""

from __future__ import annotations

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEQUENCE_BITS = 12
SHARD_BITS = 10
MAX_LOGICAL_SHARDS = 1 << SHARD_BITS
_SHARD_MASK = MAX_LOGICAL_SHARDS - 1
MAX_ID = (1 << 63) - 1


def shard_of(global_id: int) -> int:
    """The logical shard encoded in a global id."""
    return (global_id >> SEQUENCE_BITS) & _SHARD_MASK


def make_id(timestamp_ms: int, shard: int, sequence: int) -> int:
    """Compose an id the way `nextflow_id()` does (used by tests and tools)."""
    if not 0 <= shard < MAX_LOGICAL_SHARDS:
        raise ValueError(f"shard {shard} out of range")
    millis = timestamp_ms - EPOCH_MS
    return (
        (millis << (SHARD_BITS + SEQUENCE_BITS))
        | (shard << SEQUENCE_BITS)
        | (sequence & ((1 << SEQUENCE_BITS) - 1))
    )


def is_valid_id(value: int) -> bool:
    return 0 < value <= MAX_ID
