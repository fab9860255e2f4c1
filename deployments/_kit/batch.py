"""Batch writes (`POST .../batch`): up to 100 creates, updates and deletes in one call,
each with its own result, written in one transaction per logical shard.

    items -> each item's shard (a create: placed as a single create is; an update or
             delete: its record's) -> per shard, one ShardManager call running `each`:
             one transaction, every item in a savepoint of its own
          -> per item: the record (201 / 200) or a problem (404, 403, 412, 409, 422)

How it holds:
- **One transaction per shard, items apart**: an item that fails (a stale `if_match`,
  a unique value taken, a value PostgreSQL refuses) rolls back its savepoint only; the
  shard's other items commit with it. A shard that is away fails its items (503) and
  no other shard's.
- **Exactly once, per item**: with an `Idempotency-Key`, item `i` runs under the key
  `<key>#<i>` (`Once.item`), kept in its shard's transaction like a single create's
  (`deployments/_kit/once.py`): a retried batch, even after a crash halfway, makes
  nothing twice and answers each item as first (updates and deletes too: their stored
  result). The same key with another batch answers 422 `idempotency-key-reused` for
  the items whose key was used with other content.
- Permissions and scopes are those of the single operations, checked per item.
"""

from __future__ import annotations

import asyncio
import hashlib
import typing
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar

import asyncpg
from pydantic import BaseModel, Field

from deployments._kit.boundary import storage_error
from deployments._kit.once import Outcome, once
from deployments._kit.sql import written
from deployments._kit.types import Id
from deployments._kit.unique_values import Claim
from gateway.errors import PROBLEM_BASE, AppError, Unavailable
from gateway.idempotency import KeyReused, Once
from gateway.inputs import Input
from gateway.principal import Principal
from gateway.records import Record
from shards import WriteConn
from shards.client import Shards
from shards.errors import DatabaseError, ShardUnavailable, StaleShardMap

C = TypeVar("C", bound=BaseModel)
U = TypeVar("U", bound=BaseModel)
R = TypeVar("R", bound=Record)
A = TypeVar("A", bound="BatchResult[Any]")
MAX_ITEMS = 100


# -- the request ---------------------------------------------------------------------
class BatchCreate(Input, Generic[C]):
    op: Literal["create"]
    data: C


class BatchUpdate(Input, Generic[U]):
    op: Literal["update"]
    id: Id
    if_match: int | None = Field(
        default=None, ge=1, description="The version the record must be at (as If-Match)."
    )
    data: U


class BatchDelete(Input):
    op: Literal["delete"]
    id: Id
    if_match: int | None = Field(
        default=None, ge=1, description="The version the record must be at (as If-Match)."
    )


CI = TypeVar("CI", bound=BatchCreate[Any])
UI = TypeVar("UI", bound=BatchUpdate[Any])


class Batch(Input, Generic[CI, UI]):
    """A batch's body: 1 to 100 items, each a create, an update or a delete (`op`).
    Each object names its own (`class CustomerBatch(Batch[CustomerBatchCreate, ...])`)."""

    items: list[Annotated[CI | UI | BatchDelete, Field(discriminator="op")]] = Field(
        min_length=1, max_length=MAX_ITEMS
    )


# -- the answer ------------------------------------------------------------------------
class ItemProblem(BaseModel):
    """An item's error, as the single operation's problem+json would have it."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] = Field(default_factory=list)


class ItemResult(BaseModel, Generic[R]):
    index: int = Field(description="The item's place in the request, from 0.")
    status: int = Field(description="What the single operation would have answered.")
    id: Id | None = None
    data: R | None = Field(default=None, description="The record (created, updated, deleted).")
    problem: ItemProblem | None = None


class BatchResult(Record, Generic[R]):
    """Each item's result, in the request's order; `succeeded` + `failed` = items."""

    results: Sequence[ItemResult[R]]
    succeeded: int
    failed: int


def problem_of(exc: AppError) -> ItemProblem:
    return ItemProblem(
        type=PROBLEM_BASE + exc.slug, title=exc.title, status=exc.status,
        detail=exc.detail, errors=exc.errors,
    )  # fmt: skip


# -- on the shard ----------------------------------------------------------------------
# Errors of one item's values (data exceptions, integrity violations): its savepoint
# rolls back and the others go on. Anything else (the connection, a bug) fails the
# shard's transaction, as it would a single write.
_ITEM_ERRORS = ("22", "23")


async def each(
    conn: WriteConn, steps: Sequence[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]]
) -> list[Any]:
    """Run every step `fn(conn, *args)` in its own savepoint of this transaction; each
    one's value, or the `DatabaseError` that rolled its savepoint back."""
    done: list[Any] = []
    for fn, args in steps:
        try:
            async with conn.transaction():  # a savepoint inside the manager's transaction
                done.append(await fn(conn, *args))
        except asyncpg.PostgresError as exc:
            state = exc.sqlstate or ""
            if not state.startswith(_ITEM_ERRORS):
                raise
            done.append(
                DatabaseError(
                    state, str(exc), getattr(exc, "constraint_name", None),
                    getattr(exc, "column_name", None),
                )
            )  # fmt: skip
    return done


# -- in the service --------------------------------------------------------------------
@dataclass
class Plan(Generic[R, A]):
    """A batch being planned: each item's shard step, or its problem already."""

    principal: Principal
    kind: str  # "customer": for messages and redaction
    model: type[R]
    answer: type[A]  # each domain names its own (`CustomerBatchResult`)
    key: Once | None
    steps: dict[int, list[tuple[int, Callable[..., Awaitable[Any]], tuple[Any, ...]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    results: dict[int, ItemResult[R]] = field(default_factory=dict)
    ops: dict[int, str] = field(default_factory=dict)
    ids: dict[int, int] = field(default_factory=dict)
    # What an item's effect answering something else than a record means (a contact's
    # customer absent, a lead's e-mail taken), as the single operation would say it.
    explain: dict[int, Callable[[Any], AppError | None]] = field(default_factory=dict)
    replayed: int = 0  # items answered from their key (a retried batch)
    # The record as the single operation answers it (a ticket's breach state as of now).
    finish: Callable[[Any], Any] | None = None
    # The unique custom field values an item claimed: kept when it is written.
    claims: dict[int, Claim] = field(default_factory=dict)

    def item_key(self, index: int, item: BaseModel) -> Once | None:
        """Item `index`'s own key, from the batch's (None without one)."""
        if self.key is None:
            return None
        content = hashlib.sha256(item.model_dump_json().encode()).digest()
        return Once(self.key.caller, f"{self.key.key}#{index}", content)

    def add(
        self,
        index: int,
        op: str,
        shard: int,
        effect: Callable[..., Awaitable[Any]],
        *args: Any,
        record_id: int | None = None,
        key: Once | None = None,
        explain: Callable[[Any], AppError | None] | None = None,
        claim: Claim | None = None,
    ) -> None:
        """Item `index` is `effect(conn, *args)` on `shard`, once per its key.
        `explain`: the error an answer that is not the record means (else `written`'s:
        404, 403, 412). `claim`: its unique values (`ObjectFields.claim`), kept if
        the item is written, else let go."""
        self.ops[index] = op
        if claim is not None:
            self.claims[index] = claim
        if record_id is not None:
            self.ids[index] = record_id
        if explain is not None:
            self.explain[index] = explain
        self.steps[shard].append((index, once, (key, shard, self.model, effect, *args)))

    def change(
        self,
        index: int,
        item: BatchUpdate[Any] | BatchDelete,
        shard: int,
        effect: Callable[..., Awaitable[Any]],
        permission: str,
        *values: Any,
        explain: Callable[[Any], AppError | None] | None = None,
        claim: Claim | None = None,
    ) -> None:
        """An update or delete of `item.id`, by the single operation's rules: needs
        `permission`, runs `effect(conn, id, *values, if_match, actor, owners)` (the
        repo's guarded write: 404, 403, 412 as `written` says)."""
        if claim is not None:
            self.claims[index] = claim  # let go if the permission is refused
        self.principal.require(permission)
        op = "delete" if isinstance(item, BatchDelete) else "update"
        self.add(
            index, op, shard, effect, item.id, *values, item.if_match, self.principal.user_id,
            self.principal.owners(permission), record_id=item.id,
            key=self.item_key(index, item), explain=explain, claim=claim,
        )  # fmt: skip

    @property
    def item(self) -> type[ItemResult[R]]:
        """The domain's item model: what its `answer`'s `results` hold."""
        found: type[ItemResult[R]] = typing.get_args(
            self.answer.model_fields["results"].annotation
        )[0]
        return found

    def refuse(self, index: int, exc: AppError) -> None:
        self.results[index] = self.item(
            index=index, status=exc.status, id=self.ids.get(index), problem=problem_of(exc)
        )


async def run(
    plan: Plan[R, A],
    shards: Shards,
    items: Sequence[BaseModel],
    prepare: Callable[[int, Any], Awaitable[None]],
) -> A:
    """Plan every item at once with the domain's `prepare(index, item)` (its checks,
    then `plan.add` or `plan.change`; an `AppError` it raises is that item's answer),
    write the planned steps, one `each` call per shard at once, and answer every item
    in order."""

    async def planned(index: int, item: BaseModel) -> None:
        record_id = getattr(item, "id", None)  # an update's or delete's record
        if record_id is not None:
            plan.ids[index] = record_id
        try:
            await prepare(index, item)
        except AppError as exc:
            plan.refuse(index, exc)

    await asyncio.gather(*(planned(i, item) for i, item in enumerate(items)))

    async def on_shard(shard: int, steps: list[tuple[int, Any, tuple[Any, ...]]]) -> None:
        try:
            values = await shards.write(shard, each, [(fn, args) for _, fn, args in steps])
        except (ShardUnavailable, StaleShardMap):
            for index, _, _ in steps:
                plan.refuse(index, Unavailable("storage is temporarily unavailable; retry"))
            return
        except DatabaseError as exc:
            for index, _, _ in steps:
                plan.refuse(index, storage_error(exc, f"{plan.kind} batch"))
            return
        for (index, _, _), value in zip(steps, values, strict=True):
            _answer(plan, index, value)

    for steps in plan.steps.values():  # the request's order (items planned at once)
        steps.sort(key=lambda step: step[0])
    try:
        await asyncio.gather(*(on_shard(s, steps) for s, steps in plan.steps.items()))
    finally:
        await asyncio.gather(*(
            claim.settle(kept=i in plan.results and plan.results[i].problem is None)
            for i, claim in plan.claims.items()
        ))  # fmt: skip
    if plan.key is not None and plan.replayed == len(items):
        plan.key.replayed = True  # the whole batch had run: `Idempotent-Replayed`
    results = [plan.results[i] for i in range(len(items))]
    failed = sum(1 for r in results if r.problem is not None)
    return plan.answer(results=results, succeeded=len(items) - failed, failed=failed)


def _answer(plan: Plan[R, A], index: int, value: Any) -> None:
    if isinstance(value, DatabaseError):
        plan.refuse(index, storage_error(value, f"{plan.kind} batch"))
        return
    outcome: Outcome[R] = value
    if outcome.reused:
        plan.refuse(index, KeyReused())
        return
    plan.replayed += outcome.replayed
    explained = plan.explain[index](outcome.value) if index in plan.explain else None
    if explained is not None:
        plan.refuse(index, explained)
        return
    try:
        found = written(outcome.value, plan.kind, plan.ids.get(index, 0), plan.principal)
    except AppError as exc:
        plan.refuse(index, exc)
        return
    created = plan.ops[index] == "create"
    if plan.finish is not None:
        found = plan.finish(found)
    data = plan.principal.redact(plan.kind, found)
    plan.results[index] = plan.item(
        index=index, status=201 if created else 200, id=found.id, data=data
    )
