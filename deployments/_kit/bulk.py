"""Whether a bulk write (an import) is under way: work that costs as much CPU per row
as the import itself (search indexing, duplicate keys) waits for it to end, rather
than halve its rate on shared cores. Read from the integration database's `jobs`."""

from __future__ import annotations

from shards import ReadConn

CUSTOMER_IMPORT = "customer_import"  # the customers' CSV import's job kind
BULK_WRITE_KINDS = [CUSTOMER_IMPORT]
# How long a running import may stay silent before it counts as dead (an import reports
# progress after every chunk).
BULK_WRITE_ALIVE_S = 120.0


async def bulk_writes_running(conn: ReadConn, kinds: list[str], alive_s: float) -> bool:
    """Whether a job of `kinds` is queued or running and was heard from within
    `alive_s` seconds (a job its dead replica left `running` does not count)."""
    running = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM jobs
                          WHERE kind = ANY($1::text[]) AND status IN ('queued', 'running')
                            AND updated_at > now() - make_interval(secs => $2))""",
        kinds, alive_s,
    )  # fmt: skip
    return bool(running)
