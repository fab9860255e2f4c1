"""Reports within the caller's scope (`ReportQuery.within_scope`): a role whose
`report:read` is scoped never gets the totals of records outside it."""

from __future__ import annotations

import pytest

from deployments.analytics.reports import ReportQuery
from gateway.errors import Forbidden
from gateway.principal import Principal, Scope


def _caller(scope: Scope | None) -> Principal:
    return Principal(
        user_id=7,
        role="agent",
        permissions=frozenset({"report:read"}),
        scopes={} if scope is None else {"report:read": scope},
        team=frozenset({7, 8, 9}),
    )


def test_an_unscoped_role_asks_what_it_likes() -> None:
    everyone = ReportQuery()
    assert everyone.within_scope(_caller(None)) is everyone
    other = ReportQuery(owner_id=42)
    assert other.within_scope(_caller(None)) is other


def test_own_scope_narrows_to_the_caller_and_refuses_other_owners() -> None:
    caller = _caller("own")
    assert ReportQuery().within_scope(caller).owner_id == 7
    assert ReportQuery(owner_id=7).within_scope(caller).owner_id == 7
    with pytest.raises(Forbidden, match="outside"):
        ReportQuery(owner_id=8).within_scope(caller)


def test_team_scope_takes_one_member_at_a_time() -> None:
    caller = _caller("team")
    assert ReportQuery(owner_id=8).within_scope(caller).owner_id == 8
    with pytest.raises(Forbidden, match="name one member"):
        ReportQuery().within_scope(caller)
    with pytest.raises(Forbidden, match="outside"):
        ReportQuery(owner_id=42).within_scope(caller)
