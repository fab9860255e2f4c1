"""Record-level access in the sales service, without a database: which owners each
call hands the repo, and how a record outside the caller's scope becomes a 404 or a
403 before any rule or price is looked at. The shards here answer the way the repo's
SQL does (a scoped read misses, a scoped write says Denied)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from deployments._kit.errors import Conflict, Forbidden, NotFound
from deployments._kit.history import HistoryQuery
from deployments._kit.principal import Principal
from deployments._kit.sql import denied
from deployments._kit.types import Money
from deployments.sales import repo
from deployments.sales.schemas import (
    ComputedMoney,
    DealListQuery,
    DealOrderCreate,
    DealRead,
    DealUpdate,
    OrderLineInput,
    OrderListQuery,
    OrderRead,
    OrderUpdate,
    PipelineRead,
    StageHistoryQuery,
    StageMove,
    StageRead,
    WonRequest,
)
from deployments.sales.service import SalesService

NOW = datetime(2026, 3, 1, tzinfo=UTC)
A1, A2, B1 = 11, 12, 21  # a1 and a2 share a team; b1 is in another
EUR = "EUR"


def _pipeline() -> PipelineRead:
    kinds = [("Prospecting", 10, "open"), ("Proposal", 50, "open"), ("Won", 100, "won")]
    stages = [
        StageRead(
            id=100 + i,
            pipeline_id=1,
            name=name,
            position=i,
            probability=p,
            kind=kind,  # type: ignore[arg-type]
            version=1,
            created_at=NOW,
            updated_at=NOW,
        )
        for i, (name, p, kind) in enumerate(kinds, start=1)
    ]
    return PipelineRead(
        id=1, name="P", is_default=True, stages=stages, version=1, created_at=NOW, updated_at=NOW
    )


def _deal(deal_id: int, owner_id: int, status: str = "open") -> DealRead:
    return DealRead(
        id=deal_id, customer_id=500 + deal_id, contact_id=None, name=f"D{deal_id}",
        amount=Money(amount=Decimal("10.00"), currency=EUR),
        weighted_amount=ComputedMoney(amount=Decimal("1.0000"), currency=EUR),
        pipeline_id=1, stage_id=103 if status == "won" else 101,
        probability=100 if status == "won" else 10, status=status,  # type: ignore[arg-type]
        close_reason=None, closed_at=None, owner_id=owner_id, expected_close_date=None,
        source_key=None, stage_entered_at=NOW, version=1, created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def _order(order_id: int, owner_id: int) -> OrderRead:
    zero = ComputedMoney(amount=Decimal("0.00"), currency=EUR)
    return OrderRead(
        id=order_id, customer_id=700, deal_id=None, price_book_id=9, currency=EUR,
        status="draft", notes=None, owner_id=owner_id, lines=[], subtotal=zero,
        discount_total=zero, tax_total=zero, total=zero, confirmed_at=None,
        cancelled_at=None, version=1, created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def _reached(owners: frozenset[int] | None, owner_id: int) -> bool:
    return denied(owners, owner_id) is None


class FakeShards:
    """`Shards` over dicts: each repo function the service calls answers as its SQL
    would for the `owners` it is given; every call is recorded."""

    def __init__(self) -> None:
        self.deals = {d.id: d for d in (_deal(1, A1), _deal(2, A2), _deal(3, B1))}
        self.deals |= {d.id: d for d in (_deal(4, A1, "won"), _deal(5, A2, "won"))}
        self.deals |= {6: _deal(6, B1, "won")}
        self.orders = {o.id: o for o in (_order(31, A1), _order(32, A2), _order(33, B1))}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.answers: dict[Callable[..., Any], Callable[..., Any]] = {
            repo.get_deal: self.get_deal,
            repo.get_order: self.get_order,
            repo.update_deal: self.write_deal,
            repo.transition_deal: self.transition_deal,
            repo.delete_deal: self.write_deal,
            repo.update_order: self.write_order,
            repo.set_order_status: self.write_order,
            repo.list_stage_changes: self.stage_changes,
            repo.list_deals: lambda *a: [],
            repo.count_deals: lambda *a: 0,
            repo.list_orders: lambda *a: [],
            repo.count_orders: lambda *a: 0,
        }

    def shard_for_id(self, record_id: int) -> int:
        return 1

    def writes(self) -> list[str]:
        return [name for name, _ in self.calls if name not in _READS]

    async def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        self.calls.append((fn.__name__, args))
        return self.answers[fn](*args)

    async def read(self, shard: int, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._run(fn, args)

    async def write(self, shard: int, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._run(fn, args)

    async def gather(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        return [await self._run(fn, ([1], *args))]

    def get_deal(self, deal_id: int, owners: frozenset[int] | None = None) -> DealRead | None:
        deal = self.deals.get(deal_id)
        return deal if deal is not None and _reached(owners, deal.owner_id or 0) else None

    def get_order(self, order_id: int, owners: frozenset[int] | None = None) -> OrderRead | None:
        order = self.orders.get(order_id)
        return order if order is not None and _reached(owners, order.owner_id or 0) else None

    def write_deal(self, deal_id: int, *args: Any) -> Any:
        deal = self.deals[deal_id]
        return denied(args[-1], deal.owner_id) or deal

    def transition_deal(self, deal_id: int, to: Any, *args: Any) -> Any:
        deal = self.deals[deal_id]
        if refused := denied(args[-1], deal.owner_id):
            return refused
        return deal.model_copy(update={"stage_id": to.stage_id, "status": to.status})

    def write_order(self, order_id: int, *args: Any) -> Any:
        order = self.orders[order_id]
        return denied(args[-1], order.owner_id) or order

    def stage_changes(self, deal_id: int, *args: Any) -> list[Any] | None:
        return [] if self.get_deal(deal_id, args[-1]) is not None else None


_READS = {"get_deal", "get_order", "list_stage_changes", "list_deals", "count_deals"}
_READS |= {"list_orders", "count_orders"}


class FakeConfig:
    async def read(self, fn: Callable[..., Any], *args: Any) -> PipelineRead:
        return _pipeline()


class Directory:
    async def customer_exists(self, principal: Principal, customer_id: int) -> bool:
        return True

    async def contact_customer(self, principal: Principal, contact_id: int) -> int | None:
        return None


class Catalog:
    def __init__(self) -> None:
        self.quoted = 0

    async def quote(self, principal: Principal, book_id: int, product_ids: list[int]) -> Any:
        self.quoted += 1
        raise AssertionError("priced although the caller may not change the record")


def _agent(hidden: dict[str, frozenset[str]] | None = None) -> Principal:
    """a1 as the agent role has it: reads the team's deals and orders, changes its own."""
    return Principal(
        user_id=A1,
        role="agent",
        permissions=frozenset(
            {"deal:read", "deal:write", "order:read", "order:write", "product:read"}
        ),
        scopes={
            "deal:read": "team",
            "deal:write": "own",
            "order:read": "team",
            "order:write": "own",
        },
        team=frozenset({A1, A2}),
        hidden=hidden or {},
    )


def _service() -> tuple[SalesService, FakeShards, Catalog]:
    shards, catalog = FakeShards(), Catalog()
    service = SalesService(shards, FakeConfig(), Directory(), catalog)  # type: ignore[arg-type]
    return service, shards, catalog


@pytest.mark.asyncio
async def test_reads_reach_the_team_and_hide_the_rest() -> None:
    service, shards, _ = _service()
    a1 = _agent()
    assert (await service.get_deal(a1, 2)).owner_id == A2
    with pytest.raises(NotFound):
        await service.get_deal(a1, 3)
    with pytest.raises(NotFound):
        await service.stage_history(a1, 3, StageHistoryQuery())
    with pytest.raises(NotFound):
        await service.deal_history(a1, 3, HistoryQuery())
    assert (await service.get_order(a1, 32)).owner_id == A2
    with pytest.raises(NotFound):
        await service.get_order(a1, 33)
    with pytest.raises(NotFound):
        await service.order_history(a1, 33, HistoryQuery())
    assert shards.writes() == []


@pytest.mark.asyncio
async def test_lists_and_counts_carry_the_read_scope() -> None:
    service, shards, _ = _service()
    a1 = _agent()
    await service.list_deals(a1, DealListQuery(count=True))
    await service.list_orders(a1, OrderListQuery(count=True, customer_id=700))
    scoped = {name: args[-1] for name, args in shards.calls}
    team = frozenset({A1, A2})
    assert scoped == dict.fromkeys(
        ("list_deals", "count_deals", "list_orders", "count_orders"), team
    )
    admin = Principal(user_id=1, role="admin", permissions=frozenset({"deal:read"}))
    shards.calls.clear()
    await service.list_deals(admin, DealListQuery())
    assert shards.calls[0][1][-1] is None  # an unscoped role: every deal


@pytest.mark.asyncio
async def test_transitions_are_refused_before_the_rules() -> None:
    """A team mate's deal: 403, even for a move the rules would refuse (reopening an
    open deal), and the version is not told; a stranger's: 404; nothing written."""
    service, shards, _ = _service()
    a1 = _agent()
    for deal_id, error in ((2, Forbidden), (3, NotFound)):
        with pytest.raises(error):
            await service.win(a1, deal_id, WonRequest())
        with pytest.raises(error):
            await service.move_stage(a1, deal_id, StageMove(stage_id=102), if_version=9)
        with pytest.raises(error):
            await service.reopen(a1, deal_id)
    assert shards.writes() == []
    won = await service.win(a1, 1, WonRequest())
    assert won.status == "won"
    assert shards.writes() == ["transition_deal"]
    assert shards.calls[-1][1][-1] == frozenset({A1})  # checked again under the lock
    with pytest.raises(Conflict):  # an own deal already won: now the rules speak
        await service.win(a1, 4, WonRequest())


@pytest.mark.asyncio
async def test_updates_and_deletes_map_denied_to_403_or_404() -> None:
    service, shards, catalog = _service()
    a1 = _agent()
    for deal_id, error in ((2, Forbidden), (3, NotFound)):
        with pytest.raises(error):
            await service.update_deal(a1, deal_id, DealUpdate(name="x"))
    assert (await service.update_deal(a1, 1, DealUpdate(name="x"))).id == 1
    assert [args[-1] for name, args in shards.calls if name == "update_deal"] == [
        frozenset({A1})
    ] * 3
    lines = [OrderLineInput(product_id=1, quantity=Decimal(1))]
    for order_id, error in ((32, Forbidden), (33, NotFound)):
        with pytest.raises(error):
            await service.update_order(a1, order_id, OrderUpdate(notes="x"))
        with pytest.raises(error):  # refused before the lines are priced
            await service.update_order(a1, order_id, OrderUpdate(lines=lines))
        with pytest.raises(error):
            await service.set_order_status(a1, order_id, "confirmed")
    assert catalog.quoted == 0
    deleter = Principal(  # a role that deletes its own deals only
        user_id=A1, role="custom", permissions=frozenset({"deal:read", "deal:delete"}),
        scopes={"deal:read": "team", "deal:delete": "own"}, team=frozenset({A1, A2}),
    )  # fmt: skip
    with pytest.raises(Forbidden):
        await service.delete_deal(deleter, 2)
    with pytest.raises(NotFound):
        await service.delete_deal(deleter, 3)


@pytest.mark.asyncio
async def test_an_order_from_a_deal_needs_the_deal_in_write_scope() -> None:
    service, shards, catalog = _service()
    a1 = _agent()
    body = DealOrderCreate(
        price_book_id=9, lines=[OrderLineInput(product_id=1, quantity=Decimal(1))]
    )
    with pytest.raises(Forbidden):  # a team mate's won deal
        await service.create_deal_order(a1, 5, body)
    with pytest.raises(NotFound):  # a stranger's
        await service.create_deal_order(a1, 6, body)
    assert catalog.quoted == 0 and shards.writes() == []


@pytest.mark.asyncio
async def test_returned_records_are_redacted_but_changes_plan_on_the_real_deal() -> None:
    service, _, _ = _service()
    a1 = _agent(hidden={"deal": frozenset({"stage_id", "name"}), "order": frozenset({"notes"})})
    seen = await service.get_deal(a1, 2)
    assert seen.name is None and seen.stage_id is None and seen.probability == 10
    moved = await service.move_stage(a1, 1, StageMove(stage_id=102))
    assert moved.stage_id is None and moved.name is None
    assert (await service.get_order(a1, 31)).notes is None
