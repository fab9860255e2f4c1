"""64-bit global ids that carry their logical shard, so any id routes with no lookup.

Layout (Instagram/Snowflake style, always positive in a signed bigint):

    | 0 | 41 bits: milliseconds since EPOCH_MS | 10 bits: logical shard | 12 bits: sequence |

PostgreSQL makes the ids (`nextflow_id(shard)` in every sharded database, see the
migrations), so ids stay unique however many processes write. This module reads them.
The sequence part is a database-wide sequence modulo 4096, taken between two
readings of the clock that must name the same millisecond (else it is taken again):
two ids can only be equal if a database takes more than 4096 sequence values in one
millisecond (migration `_sharded/0005`; tests/integration/test_ids.py).

Ids stay unique when a logical shard moves to another server (`shards.moves`): the
new server makes ids of that shard with its own sequence but with the current time,
and it makes none before the move's switch, which comes after every write to the
shard on the old server has finished (they are held during the switch). Each new id
therefore has a newer millisecond part than any id of that shard the old server
made, provided clocks do not go back (and, across machines, are not further apart
than the switch takes).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema

EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SEQUENCE_BITS = 12
SHARD_BITS = 10
MAX_LOGICAL_SHARDS = 1 << SHARD_BITS
_SHARD_MASK = MAX_LOGICAL_SHARDS - 1
MAX_ID = (1 << 63) - 1


def shard_of(global_id: int) -> int:
    """The logical shard encoded in a global id."""
    return (global_id >> SEQUENCE_BITS) & _SHARD_MASK


def shard_sql(column: str = "id") -> str:
    """SQL for the logical shard a global-id column carries (what `shard_of` does)."""
    return f"(({column} >> {SEQUENCE_BITS}) & {_SHARD_MASK})"


def shard_test(column: str, shards: list[int], logical: int, param: str) -> tuple[str, list[int]]:
    """SQL keeping the rows of `column` whose logical shard is one of `shards` (of
    `logical` in all), and the int[] to bind to `param`: `= ANY(shards)`, or `<> ALL`
    of the other shards when they are fewer, or TRUE when there are none (a server
    holding every logical shard). Every id's shard is below `logical`, so the three
    keep the same rows; the shorter list is less work per row on a scan."""
    mine = sorted(set(shards))
    others = [s for s in range(logical) if s not in mine]
    if not others:
        return "TRUE", []
    if len(others) < len(mine):
        return f"{shard_sql(column)} <> ALL({param}::int[])", others
    return f"{shard_sql(column)} = ANY({param}::int[])", mine


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


def _parse_id(value: object) -> object:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def digits_up_to(most: int) -> str:
    """A regular expression matching exactly the decimal numbers 1..`most`, without
    leading zeros (for a JSON schema's `pattern`, where a number is a string)."""
    top = str(most)
    shorter = [f"[1-9][0-9]{{0,{len(top) - 2}}}"] if len(top) > 1 else []
    same = []
    for i, digit in enumerate(top):
        low = "1" if i == 0 else "0"
        if int(digit) > int(low):
            rest = len(top) - i - 1
            same.append(f"{top[:i]}[{low}-{int(digit) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    return "^(" + "|".join([*shorter, *same, top]) + ")$"


# An id in a pydantic model: accepted as a JSON number or string, always written as a
# string (JavaScript loses precision above 2**53). Its schema's pattern is the range.
JsonId = Annotated[
    int,
    BeforeValidator(_parse_id),
    Field(ge=1, le=MAX_ID, strict=False),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "pattern": digits_up_to(MAX_ID), "examples": ["1234567890123"]}
    ),
]
