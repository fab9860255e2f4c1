"""All SQL of the analytics service: one aggregate per report and shard server, over
the logical shards it is given (those the map puts on that server: one scan of the
table, not one per logical shard). Each function runs in one read transaction its
ShardManager opened, and keeps to those logical shards (a server can still hold rows
of a shard that moved away until the move drops them). Money stays `numeric` ->
`Decimal`; nothing is a float.

The time filters are half-open `[start, end)` instants (UTC); None means unbounded."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from shards import ReadConn
from shards.ids import shard_sql, shard_test


class ShardFilters(BaseModel):
    """The filters as the shard queries take them (times already resolved)."""

    model_config = ConfigDict(frozen=True)

    start: datetime | None = None
    end: datetime | None = None
    owner_id: int | None = None
    pipeline_id: int | None = None


def _rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]


# The filter tail every report shares: $1 the logical shards' test (shard_test),
# $2 start, $3 end, $4 owner. Returns the SQL and the value of $1.
def _window(
    shards: list[int], logical: int, time_column: str, owner_column: str
) -> tuple[str, list[int]]:
    test, shard_param = shard_test("id", shards, logical, "$1")
    return (
        f"""({test} OR $1::int[] IS NULL)
        AND ($2::timestamptz IS NULL OR {time_column} >= $2)
        AND ($3::timestamptz IS NULL OR {time_column} < $3)
        AND ($4::bigint IS NULL OR {owner_column} = $4)""",
        shard_param,
    )


async def pipeline_by_stage(
    conn: ReadConn, shards: list[int], logical: int, f: ShardFilters
) -> list[dict[str, Any]]:
    """Open deals by (pipeline, stage, currency): count, sum of amounts, and the sum of
    amount x probability (a percentage; divided by 100 after the reduce, exactly)."""
    window, shard_param = _window(shards, logical, "created_at", "owner_id")
    return _rows(
        await conn.fetch(
            f"""SELECT pipeline_id, stage_id, currency::text AS currency, count(*) AS deals,
                       sum(amount) AS amount, sum(amount * probability) AS weighted_x100
                FROM deals
                WHERE deleted_at IS NULL AND status = 'open'
                  AND {window}
                  AND ($5::bigint IS NULL OR pipeline_id = $5)
                GROUP BY pipeline_id, stage_id, currency""",
            shard_param,
            f.start,
            f.end,
            f.owner_id,
            f.pipeline_id,
        )  # fmt: skip
    )


async def revenue_won(
    conn: ReadConn, shards: list[int], logical: int, f: ShardFilters
) -> list[dict[str, Any]]:
    """Won deals by (calendar month of `closed_at` in UTC, currency): count and sum."""
    window, shard_param = _window(shards, logical, "closed_at", "owner_id")
    return _rows(
        await conn.fetch(
            f"""SELECT to_char(closed_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month,
                       currency::text AS currency, count(*) AS deals, sum(amount) AS amount
                FROM deals
                WHERE deleted_at IS NULL AND status = 'won'
                  AND {window}
                  AND ($5::bigint IS NULL OR pipeline_id = $5)
                GROUP BY 1, 2""",
            shard_param,
            f.start,
            f.end,
            f.owner_id,
            f.pipeline_id,
        )  # fmt: skip
    )


async def funnel_leads(
    conn: ReadConn, shards: list[int], logical: int, f: ShardFilters
) -> dict[str, Any]:
    """Leads created in the window, how many became customers, and the deals their
    conversions opened (checked against the sales shards in a second step)."""
    window, shard_param = _window(shards, logical, "created_at", "owner_id")
    row = await conn.fetchrow(
        f"""SELECT count(*) AS leads,
                   count(converted_customer_id) AS customers,
                   coalesce(array_agg(converted_deal_id)
                            FILTER (WHERE converted_deal_id IS NOT NULL), '{{}}') AS deal_ids
            FROM leads
            WHERE deleted_at IS NULL AND {window}""",
        shard_param, f.start, f.end, f.owner_id,
    )  # fmt: skip
    return {
        "leads": int(row["leads"]),
        "customers": int(row["customers"]),
        "deal_ids": [int(d) for d in row["deal_ids"]],
    }


async def deals_won_among(conn: ReadConn, shards: list[int], deal_ids: list[int]) -> int:
    """How many of `deal_ids` (all of the logical shards `shards`) are won."""
    count = await conn.fetchval(
        f"""SELECT count(*) FROM deals
            WHERE id = ANY($2::bigint[]) AND {shard_sql("id")} = ANY($1::int[])
              AND status = 'won' AND deleted_at IS NULL""",
        shards, deal_ids,
    )  # fmt: skip
    return int(count)


async def ticket_sla(
    conn: ReadConn, shards: list[int], logical: int, f: ShardFilters
) -> list[dict[str, Any]]:
    """Tickets created in the window by (priority, assignee): how many, how many
    breached their first-response target, their resolution target, either one."""
    window, shard_param = _window(shards, logical, "created_at", "assignee_id")
    return _rows(
        await conn.fetch(
            f"""SELECT priority, assignee_id, count(*) AS tickets,
                       count(*) FILTER (WHERE first_response_breached) AS first_response_breached,
                       count(*) FILTER (WHERE resolution_breached) AS resolution_breached,
                       count(*) FILTER (WHERE NOT first_response_breached
                                          AND NOT resolution_breached) AS met
                FROM tickets
                WHERE deleted_at IS NULL AND {window}
                GROUP BY priority, assignee_id""",
            shard_param,
            f.start,
            f.end,
            f.owner_id,
        )  # fmt: skip
    )


async def activity(
    conn: ReadConn, shards: list[int], logical: int, f: ShardFilters
) -> list[dict[str, Any]]:
    """Changes recorded in the window (`record_changes`) by (actor, record type, action)."""
    window, shard_param = _window(shards, logical, "created_at", "actor_id")
    return _rows(
        await conn.fetch(
            f"""SELECT actor_id, record_type, action, count(*) AS changes
                FROM record_changes
                WHERE actor_id IS NOT NULL AND {window}
                GROUP BY actor_id, record_type, action""",
            shard_param,
            f.start,
            f.end,
            f.owner_id,
        )  # fmt: skip
    )


async def stage_names(conn: ReadConn) -> dict[int, dict[str, Any]]:
    """Every stage (deleted ones too: old deals may sit in them) by id (sales_config)."""
    rows = await conn.fetch(
        """SELECT s.id, s.pipeline_id, s.name, s.position, s.probability, p.name AS pipeline
           FROM pipeline_stages s JOIN pipelines p ON p.id = s.pipeline_id"""
    )
    return {int(r["id"]): dict(r) for r in rows}


def as_decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value or 0)
