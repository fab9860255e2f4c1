"""Record-level access on tickets without a database: the locked-row guard of
`deployments/support/repo.py` on a fake connection, and the owners and outcomes
`SupportService` passes and answers with over a fake `Shards`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from deployments._kit.errors import Forbidden, NotFound
from deployments._kit.principal import Principal
from deployments._kit.sql import Denied, Params, Stale
from deployments.support import repo
from deployments.support.schemas import TicketAssign, TicketListQuery
from deployments.support.service import SupportService

ME, MATE, STRANGER = 11, 12, 99


class FakeConn:
    """Answers `fetchrow` (the ticket `_locked` selects) with `row`."""

    def __init__(self, row: dict[str, Any] | None) -> None:
        self.row = row

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        return self.row


def _row(assignee_id: int | None, version: int = 3) -> dict[str, Any]:
    return {"id": 1, "assignee_id": assignee_id, "version": version}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("assignee", "owners", "take", "if_version", "expected"),
    [
        (STRANGER, None, False, None, "row"),
        (MATE, frozenset({ME, MATE}), False, None, "row"),
        (STRANGER, frozenset({ME, MATE}), False, None, Denied(STRANGER)),
        (None, frozenset({ME, MATE}), False, None, Denied(None)),
        (None, frozenset({ME, MATE}), True, None, "row"),
        (STRANGER, frozenset({ME, MATE}), True, None, Denied(STRANGER)),
        (STRANGER, frozenset({ME}), False, 2, Denied(STRANGER)),  # scope before version
        (ME, frozenset({ME}), False, 2, Stale(3)),
    ],
)
async def test_the_locked_row_is_guarded_by_its_assignee(
    assignee: int | None,
    owners: frozenset[int] | None,
    take: bool,
    if_version: int | None,
    expected: object,
) -> None:
    row = _row(assignee)
    got = await repo._locked(FakeConn(row), 1, if_version, owners, take)  # type: ignore[arg-type]
    assert got == (row if expected == "row" else expected)


@pytest.mark.asyncio
async def test_a_missing_ticket_is_none_whatever_the_scope() -> None:
    assert await repo._locked(FakeConn(None), 1, None, frozenset({ME})) is None  # type: ignore[arg-type]


def test_list_filters_carry_the_owners() -> None:
    params = Params()
    where = repo._ticket_filters(TicketListQuery(), [0, 1], frozenset({MATE, ME}), params)
    assert "assignee_id = ANY($2::bigint[])" in where
    assert params.values[1] == [ME, MATE]
    unscoped = Params()
    assert not any(
        "assignee_id" in w for w in repo._ticket_filters(TicketListQuery(), [0], None, unscoped)
    )


# -- the service -------------------------------------------------------------------------
class FakeShards:
    """Answers every write with `outcome` and records the calls."""

    def __init__(self, outcome: object) -> None:
        self.outcome = outcome
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def shard_for_id(self, record_id: int) -> int:
        return 0

    async def write(self, shard: int, fn: Callable[..., Any], *args: Any) -> object:
        self.calls.append((fn, args))
        return self.outcome

    async def read(self, shard: int, fn: Callable[..., Any], *args: Any) -> object:
        self.calls.append((fn, args))
        return self.outcome


def _agent(read_scope: str | None = None) -> Principal:
    scopes: dict[str, Any] = {"ticket:write": "team"}
    if read_scope is not None:
        scopes["ticket:read"] = read_scope
    return Principal(
        user_id=ME,
        role="agent",
        permissions=frozenset({"ticket:read", "ticket:write"}),
        scopes=scopes,
        team=frozenset({ME, MATE}),
    )


def _service(shards: FakeShards) -> SupportService:
    return SupportService(shards, None, None)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_taking_a_ticket_passes_the_write_scope_and_may_take_unassigned_ones() -> None:
    shards = FakeShards(None)
    with pytest.raises(NotFound):
        await _service(shards).assign(_agent(), 5, TicketAssign(assignee_id=ME))
    [(fn, args)] = shards.calls
    assert fn is repo.assign_ticket
    assert args == (5, ME, None, ME, frozenset({ME, MATE}), True)


@pytest.mark.asyncio
async def test_only_an_unscoped_reader_may_take_unassigned_tickets() -> None:
    shards = FakeShards(None)
    with pytest.raises(NotFound):
        await _service(shards).assign(_agent("own"), 5, TicketAssign(assignee_id=ME))
    assert shards.calls[0][1][-1] is False


@pytest.mark.asyncio
async def test_giving_a_ticket_away_needs_ticket_assign_before_any_lookup() -> None:
    shards = FakeShards(None)
    with pytest.raises(Forbidden):
        await _service(shards).assign(_agent(), 5, TicketAssign(assignee_id=MATE))
    with pytest.raises(Forbidden):
        await _service(shards).assign(_agent(), 5, TicketAssign(assignee_id=None))
    assert shards.calls == []


@pytest.mark.asyncio
async def test_a_denied_change_is_403_to_a_reader_and_404_to_others() -> None:
    with pytest.raises(Forbidden):
        await _service(FakeShards(Denied(STRANGER))).assign(
            _agent(), 5, TicketAssign(assignee_id=ME)
        )
    with pytest.raises(NotFound):
        await _service(FakeShards(Denied(STRANGER))).assign(
            _agent("team"), 5, TicketAssign(assignee_id=ME)
        )
