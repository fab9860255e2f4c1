"""Likely duplicates of customers and contacts: found on create, for one record, and
listed. Mixed into `CustomerService`; no SQL here (repo.py).

How it holds at millions of records on many servers: every record's match keys
(keys.py) are kept on the logical shard each key hashes to (`match_keys`), so the
records sharing a key meet in one database, and the keys two records share are
listed apart (`duplicate_keys`). Looking up a new record's keys asks only the servers
of its keys' shards; a page of the list reads only shared keys. The keys are written by this
service's event consumer (`keep_keys`) from the records as they are when it runs, a
moment after each write; whatever reads them checks the records themselves, so a
key not yet written or not yet removed never shows a wrong pair."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import orjson
import redis.asyncio as aioredis

from deployments._kit.custom_fields import ObjectFields
from deployments._kit.events import Event
from deployments.customer.duplicates import keys as match
from deployments.customer.duplicates import repo
from deployments.customer.duplicates.schemas import (
    ContactDuplicates,
    ContactMatch,
    ContactMatches,
    CustomerDuplicates,
    CustomerMatch,
    CustomerMatches,
    DuplicateQuery,
    KeysBacklog,
)
from deployments.customer.schemas import ContactRead, CustomerRead
from gateway.errors import Forbidden, LikelyDuplicate
from gateway.listing import Page, decode_cursor, encode_cursor, validate_sort
from gateway.principal import Principal
from shards.client import Shards
from shards.ids import shard_of

T = TypeVar("T")
log = logging.getLogger("nextflow.duplicates")

Object = Literal["customer", "contact"]
# Events whose record's keys may have changed, by the kind of record.
KEYED_EVENTS: Mapping[str, Object] = {
    "customer.created": "customer",
    "customer.updated": "customer",
    "customer.deleted": "customer",
    "customer.restored": "customer",
    "customer.imported": "customer",
    "contact.created": "contact",
    "contact.updated": "contact",
    "contact.deleted": "contact",
    "contact.restored": "contact",
}
KEYS_OF: Mapping[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "customer": match.of_customer,
    "contact": match.of_contact,
}
MATCHES_MAX = 20  # likely duplicates named for one record
# Records whose keys wait for a bulk import to end, or for a rebuild: entries
# {"object": ..., "ids": [...]}, oldest first.
WAITING = "nextflow:customer:keys:waiting"
_KEYING_BATCH = 2_000  # records whose keys one round of `keep_keys` writes
_READ = {"customer": "customer:read", "contact": "contact:read"}


class Duplicates:
    """The duplicates half of `CustomerService` (needs its `shards` and its custom
    field views)."""

    shards: Shards
    custom: ObjectFields
    contact_fields: ObjectFields
    redis: aioredis.Redis
    bulk_writes_running: Callable[[], Awaitable[bool]]

    # -- keeping the keys (the consumer group `customer`) ------------------------------
    async def keep_keys(self, events: Sequence[Event]) -> int:
        """Write the match keys of every customer and contact these events name, from
        the records as they are now (a deleted one has none). Handled twice or out of
        order, the keys end as the records are. A bulk import's records wait in
        `WAITING` (pushed before the events are acknowledged: none is lost) for the
        import to end (`keep_waiting_keys`). Returns how many key rows changed."""
        wanted: dict[str, set[int]] = defaultdict(set)
        waiting = []
        for event in events:
            keyed = KEYED_EVENTS.get(event.type)
            if keyed is None:
                continue
            if event.type == "customer.imported":
                ids = [int(i) for p in ("created", "updated") for i in event.data.get(p) or ()]
                waiting.append(orjson.dumps({"object": keyed, "ids": ids}))
            else:
                wanted[keyed].add(int(event.aggregate_id))
        if waiting:
            await self.redis.rpush(WAITING, *waiting)
        return await self._keep(wanted)

    async def keep_waiting_keys(self) -> int:
        """Write the keys of the records waiting in `WAITING`, oldest first, unless an
        import runs (checked between entries). Any replica may run it at any time (an
        entry written twice is written alike); how many records it worked on."""
        done = 0
        while not await self.bulk_writes_running():
            entry = await self.redis.lindex(WAITING, 0)
            if entry is None:
                break
            item = orjson.loads(entry)
            await self._keep({item["object"]: set(item["ids"])})
            # That entry, not "the first": another replica's round may have taken it.
            await self.redis.lrem(WAITING, 1, entry)  # type: ignore[arg-type]  # bytes work
            done += len(item["ids"])
        return done

    async def rebuild_keys(self, principal: Principal) -> KeysBacklog:
        """Queue every customer and contact (live ones; a deleted record has no keys)
        for its keys to be written again: for records written before this index
        existed, or after a change to how keys are made. Every logical shard is read
        in id order, a page of ids at a time; the writing is `keep_waiting_keys`'s."""
        principal.require("customer:write", "contact:write")
        if principal.owners("customer:write") is not None:
            raise Forbidden("rebuilding the duplicate keys needs customer:write on every record")
        queued = 0
        for kind in ("customer", "contact"):
            for shard in range(self.shards.map.logical_shards):
                after = 0
                while True:
                    page = await self.shards.read(shard, repo.live_ids, kind, shard, after,
                                                  _KEYING_BATCH)  # fmt: skip
                    if not page:
                        break
                    await self.redis.rpush(WAITING, orjson.dumps({"object": kind, "ids": page}))
                    queued += len(page)
                    after = page[-1]
        return KeysBacklog(queued=queued, waiting=await self._waiting())

    async def keys_backlog(self, principal: Principal) -> KeysBacklog:
        """How many records wait for their keys (an import's, a rebuild's)."""
        principal.require("customer:read")
        return KeysBacklog(queued=0, waiting=await self._waiting())

    async def _waiting(self) -> int:
        entries = await self.redis.lrange(WAITING, 0, -1)
        return sum(len(orjson.loads(e)["ids"]) for e in entries)

    async def _keep(self, wanted: Mapping[str, set[int]]) -> int:
        changed = 0
        for object, ids in wanted.items():
            every = sorted(ids)
            for at in range(0, len(every), _KEYING_BATCH):
                changed += await self._keep_keys_of(object, every[at : at + _KEYING_BATCH])
        return changed

    async def _keep_keys_of(self, kind: str, ids: list[int]) -> int:
        found = {r["id"]: r for r in await self._on_servers(repo.sources, kind, _by_shard(ids))}
        records = []
        for record_id in ids:
            row = found.get(record_id)
            keys = [] if row is None or row["deleted"] else KEYS_OF[kind](row)
            records.append((record_id, [(k, self.shards.map.shard_for_key(k)) for k in keys]))
        return sum(await self.shards.write_each_server(repo.set_keys, kind, records))

    # -- reading them -------------------------------------------------------------------
    async def _records(
        self, principal: Principal, kind: str, ids: Iterable[int]
    ) -> dict[int, dict[str, Any]]:
        """The live records of `ids` the caller may read, by id."""
        ids = sorted(set(ids))
        if not ids:
            return {}
        owners = principal.owners(_READ[kind])
        rows = await self._on_servers(repo.sources, kind, _by_shard(ids))
        return {
            r["id"]: r for r in rows
            if not r["deleted"] and (owners is None or r["owner"] in owners)
        }  # fmt: skip

    async def _on_servers(
        self,
        fn: Callable[..., Awaitable[list[T]]],
        kind: str,
        by_shard: Mapping[int, list[Any]],
    ) -> list[T]:
        """`fn(conn, shards, kind, values)` on each server holding one of these logical
        shards, with its shards and their values, all at once; the results joined. (A
        key or a record lives on one logical shard: asking only its server keeps a
        create's lookup to the servers it needs, not every one.)"""
        seen = self.shards.map
        values: dict[str, list[Any]] = defaultdict(list)
        shards: dict[str, list[int]] = defaultdict(list)
        for shard, items in by_shard.items():
            server = seen.server_for_shard(shard).name
            values[server].extend(items)
            shards[server].append(shard)
        parts = await asyncio.gather(*(
            self.shards.read(shards[server][0], fn, shards[server], kind, values[server])
            for server in values
        ))  # fmt: skip
        return [item for part in parts for item in part]

    async def _matches(
        self, principal: Principal, kind: str, keys: list[str], exclude: int | None = None
    ) -> list[tuple[list[match.Kind], dict[str, Any]]]:
        """(kinds matched, record) of the live records the caller may read that share
        one of `keys` now, oldest first; at most MATCHES_MAX."""
        if not keys:
            return []
        by_shard: dict[int, list[str]] = defaultdict(list)
        for key in keys:
            by_shard[self.shards.map.shard_for_key(key)].append(key)
        held = await self._on_servers(repo.holders, kind, by_shard)
        ids = {record_id for _, record_id in held if record_id != exclude}
        records = await self._records(principal, kind, ids)
        out = []
        for record_id in sorted(records):
            shared = match.matched_on(keys, KEYS_OF[kind](records[record_id]))
            if shared:
                out.append((shared, records[record_id]))
        return out[:MATCHES_MAX]

    async def customer_matches(
        self, principal: Principal, data: Mapping[str, Any], exclude: int | None = None
    ) -> list[CustomerMatch]:
        """Customers the caller may read that are likely the one `data` describes
        (a create's body, or an existing customer's values)."""
        principal.require("customer:read")
        found = await self._matches(principal, "customer", match.of_customer(data), exclude)
        shown = await self._as_shown(principal, "customer", [r for _, r in found])
        return [
            CustomerMatch(matched_on=kinds, customer=customer)
            for (kinds, _), customer in zip(found, shown, strict=True)
        ]

    async def contact_matches(
        self, principal: Principal, data: Mapping[str, Any], exclude: int | None = None
    ) -> list[ContactMatch]:
        """Contacts the caller may read that are likely the one `data` describes."""
        principal.require("contact:read")
        found = await self._matches(principal, "contact", match.of_contact(data), exclude)
        shown = await self._as_shown(principal, "contact", [r for _, r in found])
        return [
            ContactMatch(matched_on=kinds, contact=contact)
            for (kinds, _), contact in zip(found, shown, strict=True)
        ]

    async def customer_duplicates(self, principal: Principal, customer_id: int) -> CustomerMatches:
        """The likely duplicates of one customer."""
        customer = await self.get(principal, customer_id)  # type: ignore[attr-defined]
        found = await self.customer_matches(principal, customer.model_dump(), customer_id)
        return CustomerMatches(data=found)

    async def contact_duplicates(self, principal: Principal, contact_id: int) -> ContactMatches:
        """The likely duplicates of one contact (by e-mail or phone anywhere, by name
        within its customer)."""
        contact = await self.get_contact(principal, contact_id)  # type: ignore[attr-defined]
        found = await self.contact_matches(principal, contact.model_dump(), contact_id)
        return ContactMatches(data=found)

    async def refuse_duplicates(
        self,
        principal: Principal,
        kind: str,
        data: Mapping[str, Any],
        unless: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """LikelyDuplicate (409) naming the records the caller may read that are likely
        the one `data` describes; nothing when there are none, or when `unless()` says
        (asked only when there are: a repeat of a create that was made)."""
        found = await self._matches(principal, kind, KEYS_OF[kind](data))
        if found and (unless is None or not await unless()):
            raise LikelyDuplicate(
                f"likely a duplicate of {kind} {', '.join(str(r['id']) for _, r in found)};"
                " send ?duplicates=warn to create it anyway",
                [
                    {
                        "field": m,
                        "message": f"{kind} {r['id']} has the same {m}",
                        "id": str(r["id"]),
                    }
                    for kinds, r in found
                    for m in kinds
                ],  # fmt: skip
            )

    async def duplicates_of_new(
        self, principal: Principal, kind: str, data: Mapping[str, Any]
    ) -> list[int]:
        """The ids of the records the caller may read that are likely the one `data`
        describes (what a create reports). It runs beside the create: a lookup that
        fails (a server away) reports none rather than fail a create that was made."""
        if not principal.can(_READ[kind]):
            return []
        try:
            found = await self._matches(principal, kind, KEYS_OF[kind](data))
        except Exception:
            log.warning("looking up the duplicates of a new %s failed", kind, exc_info=True)
            return []
        return [r["id"] for _, r in found]

    # -- the lists ------------------------------------------------------------------------
    async def list_customer_duplicates(
        self, principal: Principal, query: DuplicateQuery
    ) -> Page[CustomerDuplicates]:
        """Groups of customers sharing a normalised e-mail, phone or name, in the order
        of that value, a page at a time; only customers the caller may read (a group
        needs two of them)."""
        principal.require("customer:read")
        groups, cursor = await self._groups(principal, "customer", query)
        out = [
            CustomerDuplicates(
                matched_on=match.kind_of(key),
                customers=await self._as_shown(principal, "customer", rows),
            )
            for key, rows in groups
        ]
        return Page[CustomerDuplicates](data=out, next_cursor=cursor)

    async def list_contact_duplicates(
        self, principal: Principal, query: DuplicateQuery
    ) -> Page[ContactDuplicates]:
        """Groups of contacts sharing a normalised e-mail or phone, or a name within one
        customer, as the customers' list."""
        principal.require("contact:read")
        groups, cursor = await self._groups(principal, "contact", query)
        out = [
            ContactDuplicates(
                matched_on=match.kind_of(key),
                contacts=await self._as_shown(principal, "contact", rows),
            )
            for key, rows in groups
        ]
        return Page[ContactDuplicates](data=out, next_cursor=cursor)

    async def _as_shown(
        self, principal: Principal, kind: str, rows: Sequence[Mapping[str, Any]]
    ) -> list[Any]:
        """Rows as their read models, as the caller sees them: fields its role hides as
        null, only the values of live custom fields (as every read of them answers)."""
        model, fields = (
            (CustomerRead, self.custom)
            if kind == "customer"
            else (ContactRead, self.contact_fields)
        )
        return await fields.shown_all(principal.redact_all(kind, [_model(model, r) for r in rows]))

    async def _groups(
        self, principal: Principal, kind: str, query: DuplicateQuery
    ) -> tuple[list[tuple[str, list[dict[str, Any]]]], str | None]:
        """A page of shared keys across every server, merged in key order, each with
        the live records the caller may read that hold it now (two or more)."""
        order = validate_sort(query)
        position = decode_cursor(query)
        after = position.value if position is not None else None
        runs = await self.shards.gather(repo.shared_keys, kind, after, query.limit)
        merged = sorted((g for run in runs for g in run), key=lambda g: g[0])
        page = merged[: query.limit]
        cursor = None
        if page and (len(merged) > query.limit or any(len(r) == query.limit for r in runs)):
            cursor = encode_cursor(order, page[-1][0], min(page[-1][1]))
        records = await self._records(principal, kind, (i for _, ids in page for i in ids))
        groups = []
        for key, ids in page:
            rows = [records[i] for i in ids if i in records and key in KEYS_OF[kind](records[i])]
            if len(rows) >= 2:
                groups.append((key, rows))
        return groups, cursor


def _by_shard(ids: Iterable[int]) -> dict[int, list[int]]:
    by_shard: dict[int, list[int]] = defaultdict(list)
    for record_id in ids:
        by_shard[shard_of(record_id)].append(record_id)
    return by_shard


def _model(model: Any, row: Mapping[str, Any]) -> Any:
    return model.model_validate({k: v for k, v in row.items()
                                 if k not in ("owner", "deleted", "deleted_at")})  # fmt: skip
