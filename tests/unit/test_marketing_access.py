"""Record-level access in the marketing service, against a fake shard client: the
owner sets (scopes) handed to the repo, 403 against 404 for a refused change, what
an agent may not give away, and the fields a viewer never sees (the SQL itself is
covered end to end, in tests/e2e/test_record_access_marketing.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from deployments._kit.errors import Conflict, Forbidden, NotFound
from deployments._kit.history import ChangeRead, HistoryQuery
from deployments._kit.principal import Principal
from deployments._kit.sql import Denied
from deployments.marketing import repo
from deployments.marketing.schemas import (
    LeadConvert,
    LeadCreate,
    LeadListQuery,
    LeadRead,
    LeadUpdate,
    MemberRead,
    MemberUpdate,
)
from deployments.marketing.service import MarketingService

T = TypeVar("T")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
# a1 (user 1) shares team A with a2 (user 2); user 7 is in another team.
AGENT = Principal(
    user_id=1,
    role="agent",
    permissions=frozenset(
        {
            "lead:read",
            "lead:write",
            "lead:convert",
            "campaign:read",
            "customer:write",
            "contact:write",
        }
    ),  # fmt: skip
    scopes={
        "lead:read": "team",
        "lead:write": "own",
        "lead:convert": "own",
        "campaign:read": "team",
    },  # fmt: skip
    team=frozenset({1, 2}),
)
VIEWER = Principal(
    user_id=9,
    role="viewer",
    permissions=frozenset({"lead:read", "campaign:read"}),
    hidden={"lead": frozenset({"email", "phone"})},
)
MANAGER = Principal(
    user_id=5,
    role="manager",
    permissions=frozenset({"lead:read", "lead:write", "campaign:read", "campaign:write"}),
)


class _Shards:
    """Answers each call with the next of `answers` and records (function, args)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def shard_for_id(self, record_id: int) -> int:
        return 0

    def place(self, key: str | None = None) -> int:
        return 0

    async def read(self, shard: int, fn: Any, *args: Any) -> Any:
        self.calls.append((fn.__name__, args))
        return self.answers.pop(0)

    write = read

    async def gather(self, fn: Any, *args: Any) -> list[Any]:
        return [await self.read(0, fn, *args)]


def _service(*answers: Any) -> tuple[MarketingService, _Shards]:
    shards = _Shards(*answers)
    return MarketingService(shards, config=None), shards  # type: ignore[arg-type]


def _run(call: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(call)


def _lead(lead_id: int = 5, owner_id: int = 1) -> LeadRead:
    return LeadRead(
        id=lead_id, first_name="Ada", last_name=None, email="ada@example.com",
        phone="+1 555", company="Analytical", title=None, source="web_form", status="new",
        owner_id=owner_id, campaign_id=None, score=None, notes=None, custom_fields={},
        capture_count=0, last_captured_at=None, converted_customer_id=None,
        converted_contact_id=None, converted_deal_id=None, converted_at=None, version=1,
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_reads_and_lists_pass_the_read_scope() -> None:
    svc, shards = _service(_lead(), [_lead()], 1)
    _run(svc.get_lead(AGENT, 5))
    _run(svc.list_leads(AGENT, LeadListQuery(count=True)))
    assert shards.calls[0] == ("get_lead", (5, frozenset({1, 2})))
    assert shards.calls[1][0] == "list_leads" and shards.calls[1][1][-1] == frozenset({1, 2})
    assert shards.calls[2] == ("count_leads", (LeadListQuery(count=True), frozenset({1, 2})))
    svc, shards = _service(_lead())
    _run(svc.get_lead(MANAGER, 5))
    assert shards.calls[0] == ("get_lead", (5, None))  # unscoped: every lead


def test_a_lead_out_of_reach_is_not_found() -> None:
    svc, _ = _service(None)
    with pytest.raises(NotFound):
        _run(svc.get_lead(AGENT, 5))


def test_refused_change_is_403_for_a_team_mate_and_404_for_a_stranger() -> None:
    svc, shards = _service(Denied(2), Denied(7), Denied(None))
    with pytest.raises(Forbidden):
        _run(svc.update_lead(AGENT, 5, LeadUpdate(status="contacted")))
    assert shards.calls[0][1][-1] == frozenset({1})  # the write scope: own
    with pytest.raises(NotFound):
        _run(svc.update_lead(AGENT, 5, LeadUpdate(status="contacted")))
    with pytest.raises(NotFound):  # nobody's lead: reached only unscoped
        _run(svc.update_lead(AGENT, 5, LeadUpdate(status="contacted")))


def test_converting_a_team_mates_lead_is_403() -> None:
    svc, shards = _service(Denied(2), Denied(7))
    with pytest.raises(Forbidden):
        _run(svc.convert_lead(AGENT, 5, LeadConvert()))
    assert shards.calls[0][0] == "begin_conversion"
    assert shards.calls[0][1][-1] == frozenset({1})  # lead:convert is own
    with pytest.raises(NotFound):
        _run(svc.convert_lead(AGENT, 5, LeadConvert()))


def test_conversion_and_history_need_the_lead_in_reach() -> None:
    svc, shards = _service(None, None)
    with pytest.raises(NotFound):
        _run(svc.get_conversion(AGENT, 5))
    assert shards.calls[0] == ("get_conversion", (5, frozenset({1, 2})))
    with pytest.raises(NotFound):
        _run(svc.lead_history(AGENT, 5, HistoryQuery()))
    assert [name for name, _ in shards.calls] == ["get_conversion", "get_lead"]


def test_an_agent_may_not_give_a_lead_away() -> None:
    svc, shards = _service()
    with pytest.raises(Forbidden):
        _run(svc.create_lead(AGENT, LeadCreate(company="X", owner_id=2)))
    with pytest.raises(Forbidden):
        _run(svc.update_lead(AGENT, 5, LeadUpdate(owner_id=7)))
    with pytest.raises(Forbidden):
        _run(svc.update_lead(AGENT, 5, LeadUpdate(owner_id=None)))
    assert shards.calls == []  # refused before anything was written
    svc, shards = _service(_lead(owner_id=2))
    assert _run(svc.create_lead(MANAGER, LeadCreate(company="X", owner_id=2))).owner_id == 2


def test_a_duplicate_is_named_only_to_whom_may_read_it() -> None:
    svc, _ = _service(repo.Duplicate(42, False, 7), repo.Duplicate(42, False, 2))
    with pytest.raises(Conflict) as hidden:
        _run(svc.create_lead(AGENT, LeadCreate(email="a@example.com")))
    assert "42" not in hidden.value.detail and "42" not in str(hidden.value.errors)
    with pytest.raises(Conflict) as named:
        _run(svc.create_lead(AGENT, LeadCreate(email="a@example.com")))
    assert "lead 42" in named.value.detail


def test_a_viewer_sees_no_email_or_phone() -> None:
    svc, _ = _service(_lead(), [_lead(5), _lead(6)])
    seen = _run(svc.get_lead(VIEWER, 5))
    assert seen.email is None and seen.phone is None and seen.company == "Analytical"
    listed = _run(svc.list_leads(VIEWER, LeadListQuery()))
    assert [(x.email, x.phone) for x in listed.data] == [(None, None), (None, None)]
    with pytest.raises(Forbidden):  # a filter would tell the hidden value
        _run(svc.list_leads(VIEWER, LeadListQuery(email="ada@example.com")))
    svc, _ = _service(_lead())
    assert _run(svc.get_lead(MANAGER, 5)).email == "ada@example.com"


def test_a_viewer_sees_that_a_hidden_field_changed_not_its_value() -> None:
    change = ChangeRead(
        id=1, record_type="lead", record_id=5, action="created", actor_id=1, created_at=NOW,
        changes={"email": [None, "ada@example.com"], "company": [None, "Analytical"]},
    )  # fmt: skip
    svc, _ = _service(_lead(), [change])
    page = _run(svc.lead_history(VIEWER, 5, HistoryQuery()))
    assert page.data[0].changes == {"email": [None, None], "company": [None, "Analytical"]}


def test_a_member_change_outside_the_campaign_scope() -> None:
    scoped = MANAGER.model_copy(update={"scopes": {"campaign:write": "own"}})
    member = MemberRead(
        id=3, campaign_id=8, contact_id=None, lead_id=5, status="sent", version=2,
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    svc, shards = _service(Denied(7), member)
    with pytest.raises(Forbidden, match="campaign 8"):  # readable (read is unscoped)
        _run(svc.update_member(scoped, 8, 3, MemberUpdate(status="sent")))
    assert shards.calls[0][1][-1] == frozenset({5})
    assert _run(svc.update_member(scoped, 8, 3, MemberUpdate(status="sent"))) == member
