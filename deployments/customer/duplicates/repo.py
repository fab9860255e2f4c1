"""The SQL of likely duplicates: the records' current values (on the records' shards)
and the match keys (on the keys' shards, migration customer/0008). Every function is
given the logical shards of the server it runs on (`Shards.gather` and
`write_each_server`) and keeps to them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deployments._kit.sql import Params, on_shards
from deployments.customer.repo import COLUMNS
from shards import ReadConn, WriteConn, single_statement
from shards.ids import shard_sql

_SOURCES = {
    "customer": """SELECT {columns}, owner_id AS owner, deleted_at IS NOT NULL AS deleted
                   FROM customers WHERE id = ANY({ids}::bigint[]) AND {shards}""",
    "contact": """SELECT t.*, c.owner_id AS owner,
                         (t.deleted_at IS NOT NULL OR c.deleted_at IS NOT NULL) AS deleted
                  FROM (SELECT {columns}, deleted_at FROM contacts
                        WHERE id = ANY({ids}::bigint[]) AND {shards}) t
                  JOIN customers c ON c.id = t.customer_id""",
}


@single_statement
async def sources(
    conn: ReadConn, shards: list[int], object: str, ids: Sequence[int]
) -> list[dict[str, Any]]:
    """The records of `ids` this server holds, live or deleted (`deleted`), each with
    its owner (`owner`; a contact's: its customer's)."""
    params = Params()
    sql = _SOURCES[object].format(
        columns=COLUMNS[object], ids=params(list(ids)), shards=on_shards(params, shards)
    )
    return [dict(r) for r in await conn.fetch(sql, *params.values)]


async def set_keys(
    conn: WriteConn,
    shards: list[int],
    object: str,
    records: Sequence[tuple[int, Sequence[tuple[str, int]]]],
) -> int:
    """Make each record's keys on this server exactly those given ((key, its logical
    shard) pairs; none for a deleted record), and `duplicate_keys` hold exactly the
    keys of this server's shards that two or more records share. Keys are locked
    (in one order) before they are counted, so two writers adding one key to two
    records never both see it alone. Returns how many key rows changed."""
    owned = set(shards)
    ids = [record_id for record_id, _ in records]
    wanted = [(key, record_id, shard) for record_id, keys in records
              for key, shard in keys if shard in owned]  # fmt: skip
    params = Params()
    old = await conn.fetch(
        f"""SELECT key, record_id FROM match_keys
            WHERE object = {params(object)} AND record_id = ANY({params(ids)}::bigint[])
              AND {on_shards(params, shards)}""",
        *params.values,
    )
    keep = {(k, r) for k, r, _ in wanted}
    gone = [(r["key"], r["record_id"]) for r in old if (r["key"], r["record_id"]) not in keep]
    have = {(r["key"], r["record_id"]) for r in old}
    new = [(k, r, s) for k, r, s in wanted if (k, r) not in have]
    touched = sorted({k for k, _ in gone} | {k for k, _, _ in new})
    if not touched:
        return 0
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || k, 0))"
        " FROM unnest($2::text[]) AS k",
        object,
        touched,
    )
    if gone:
        await conn.execute(
            """DELETE FROM match_keys m USING unnest($2::text[], $3::bigint[]) AS g(key, rid)
               WHERE m.object = $1 AND m.key = g.key AND m.record_id = g.rid""",
            object,
            [k for k, _ in gone],
            [r for _, r in gone],
        )
    if new:
        await conn.execute(
            """INSERT INTO match_keys (id, object, key, record_id)
               SELECT nextflow_id(s), $1, k, r
               FROM unnest($2::text[], $3::bigint[], $4::int[]) AS n(k, r, s)
               ON CONFLICT (object, key, record_id) DO NOTHING""",
            object,
            [k for k, _, _ in new],
            [r for _, r, _ in new],
            [s for _, _, s in new],
        )
    counts = await conn.fetch(
        """SELECT t.key, count(m.record_id) AS n, min(m.id) AS any_id
           FROM unnest($2::text[]) AS t(key)
           LEFT JOIN match_keys m ON m.object = $1 AND m.key = t.key
           GROUP BY t.key""",
        object,
        touched,
    )
    shared = [(r["key"], r["any_id"]) for r in counts if r["n"] >= 2]
    alone = [r["key"] for r in counts if r["n"] < 2]
    if alone:
        await conn.execute(
            "DELETE FROM duplicate_keys WHERE object = $1 AND key = ANY($2::text[])",
            object,
            alone,
        )
    if shared:
        # A shared key's row goes on the key's shard: that of any of its match keys.
        await conn.execute(
            f"""INSERT INTO duplicate_keys (id, object, key)
               SELECT nextflow_id({shard_sql("any_id")}::int), $1, k
               FROM unnest($2::text[], $3::bigint[]) AS d(k, any_id)
               ON CONFLICT (object, key) DO NOTHING""",
            object,
            [k for k, _ in shared],
            [i for _, i in shared],
        )
    return len(gone) + len(new)


@single_statement
async def holders(
    conn: ReadConn, shards: list[int], object: str, keys: Sequence[str]
) -> list[tuple[str, int]]:
    """(key, record id) of every record holding one of `keys` on this server's shards."""
    params = Params()
    rows = await conn.fetch(
        f"""SELECT key, record_id FROM match_keys
            WHERE object = {params(object)} AND key = ANY({params(list(keys))}::text[])
              AND {on_shards(params, shards)}""",
        *params.values,
    )
    return [(r["key"], r["record_id"]) for r in rows]


@single_statement
async def shared_keys(
    conn: ReadConn, shards: list[int], object: str, after: str | None, limit: int
) -> list[tuple[str, list[int]]]:
    """Up to `limit` keys after `after` (in byte order) that two or more records share
    on this server's shards, each with its records' ids."""
    params = Params()
    where = [f"d.object = {params(object)}", on_shards(params, shards, "d.id")]
    if after is not None:
        where.append(f"d.key > {params(after)}")
    rows = await conn.fetch(
        f"""SELECT d.key, array_agg(m.record_id ORDER BY m.record_id) AS ids
            FROM (SELECT id, object, key FROM duplicate_keys d WHERE {" AND ".join(where)}
                  ORDER BY key LIMIT {params(limit)}) d
            JOIN match_keys m ON m.object = d.object AND m.key = d.key
            GROUP BY d.key ORDER BY d.key""",
        *params.values,
    )
    return [(r["key"], list(r["ids"])) for r in rows]


@single_statement
async def live_ids(conn: ReadConn, object: str, shard: int, after: int, limit: int) -> list[int]:
    """Up to `limit` ids of live records of logical shard `shard` after `after`."""
    table = {"customer": "customers", "contact": "contacts"}[object]
    params = Params()
    rows = await conn.fetch(
        f"""SELECT id FROM {table}
            WHERE deleted_at IS NULL AND id > {params(after)} AND {on_shards(params, [shard])}
            ORDER BY id LIMIT {params(limit)}""",
        *params.values,
    )
    return [r["id"] for r in rows]
