"""Support rules as pure functions: the status matrix, SLA clocks (with the pause),
round-robin and least-busy choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deployments.support import rules
from deployments.support.rules import Clock, Member, Policy

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
POLICY = Policy(first_response_s=3600, resolution_s=4 * 3600)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_clock(policy: Policy = POLICY) -> Clock:
    first, resolution = rules.due_times(T0, policy)
    return Clock("new", T0, first, resolution)


# -- status matrix ---------------------------------------------------------------------
ALLOWED = {
    ("new", "assigned"), ("new", "pending"), ("new", "resolved"),
    ("assigned", "new"), ("assigned", "pending"), ("assigned", "resolved"),
    ("pending", "new"), ("pending", "assigned"), ("pending", "resolved"),
    ("resolved", "new"), ("resolved", "assigned"), ("resolved", "closed"),
}  # fmt: skip


@pytest.mark.parametrize("current", rules.STATUSES)
@pytest.mark.parametrize("target", rules.STATUSES)
def test_transition_matrix(current: str, target: str) -> None:
    # The assignee each target needs: "assigned" needs one, "new" needs none.
    assignee = None if target == "new" else 7
    if (current, target) in ALLOWED:
        rules.check_transition(current, target, assignee)
    else:
        with pytest.raises(rules.TransitionRefused):
            rules.check_transition(current, target, assignee)


def test_closed_is_final_and_says_so() -> None:
    with pytest.raises(rules.TransitionRefused, match="none \\(final\\)"):
        rules.check_transition("closed", "assigned", 7)


def test_assigned_needs_an_assignee_and_new_needs_none() -> None:
    with pytest.raises(rules.TransitionRefused, match="without an assignee"):
        rules.check_transition("pending", "assigned", None)
    with pytest.raises(rules.TransitionRefused, match="unassigning"):
        rules.check_transition("assigned", "new", 7)
    assert rules.reopened_status(None) == "new"
    assert rules.reopened_status(7) == "assigned"


# -- SLA clocks ------------------------------------------------------------------------
def test_due_times_come_from_the_policy() -> None:
    first, resolution = rules.due_times(T0, POLICY)
    assert first == at(3600) and resolution == at(4 * 3600)
    assert rules.due_times(T0, POLICY, paused_s=600)[1] == at(4 * 3600 + 600)


def test_pending_stops_the_resolution_clock_and_pushes_its_due_time() -> None:
    c = rules.change_status(new_clock(), "assigned", at(60))
    c = rules.change_status(c, "pending", at(1000))
    assert c.sla_paused_at == at(1000)
    # While stopped, the remaining time is frozen and nothing is breached, even late.
    assert rules.resolution_remaining_s(c, at(1000)) == rules.resolution_remaining_s(c, at(100_000))
    assert not rules.resolution_breached(c, at(100_000))
    c = rules.change_status(c, "assigned", at(1000 + 1800))
    assert c.sla_paused_at is None
    assert c.sla_paused_s == 1800
    assert c.resolution_due_at == at(4 * 3600 + 1800)
    assert c.first_response_due_at == at(3600)  # the first-response clock never pauses


def test_pauses_add_up_and_resolved_stops_the_clock_too() -> None:
    c = rules.change_status(new_clock(), "pending", at(100))
    c = rules.change_status(c, "new", at(200))
    c = rules.change_status(c, "pending", at(300))
    c = rules.change_status(c, "resolved", at(400))  # still stopped since 300
    assert c.sla_paused_at == at(300) and c.resolved_at == at(400)
    c = rules.change_status(c, "new", at(1300))  # reopened: stopped 100 + 1000 s in all
    assert c.sla_paused_s == 1100
    assert c.resolution_due_at == at(4 * 3600 + 1100)
    assert c.resolved_at is None


def test_breaches_as_of_now() -> None:
    c = new_clock()
    assert not rules.first_response_breached(c, at(3599))
    assert rules.first_response_breached(c, at(3601))
    answered = rules.first_response(c, at(1800))
    assert answered.first_response_at == at(1800)
    assert not rules.first_response_breached(answered, at(10 * 3600))
    assert rules.first_response(answered, at(2000)).first_response_at == at(1800)
    late = rules.first_response(c, at(4000))
    assert late.first_response_breached  # stored at once, not left to the sweep
    assert rules.resolution_breached(c, at(4 * 3600 + 1))
    # Resolved in time: the first-response clock stopped with it, nothing breached.
    done = rules.change_status(c, "resolved", at(600))
    assert not rules.first_response_breached(done, at(99_999))
    assert not rules.resolution_breached(done, at(99_999))


def test_stopping_after_the_due_time_keeps_the_breach() -> None:
    c = rules.change_status(new_clock(), "pending", at(5 * 3600))
    assert c.resolution_breached  # was already late when it stopped
    c = rules.change_status(c, "assigned", at(6 * 3600))
    assert c.resolution_breached  # flags are never cleared


def test_reprioritising_counts_from_creation_with_the_paused_time() -> None:
    c = rules.change_status(new_clock(), "pending", at(100))
    c = rules.change_status(c, "new", at(700))
    urgent = rules.reprioritised(c, Policy(first_response_s=600, resolution_s=7200), at(800))
    assert urgent.first_response_due_at == at(600)
    assert urgent.resolution_due_at == at(7200 + 600)
    assert urgent.first_response_breached  # already past the new first-response target


# -- assignment ------------------------------------------------------------------------
MEMBERS = [Member(30), Member(10), Member(20), Member(40, active=False)]


def test_round_robin_goes_round_in_user_id_order_skipping_inactive() -> None:
    picks: list[int] = []
    last = None
    for _ in range(5):
        chosen = rules.next_round_robin(MEMBERS, last)
        assert chosen is not None
        picks.append(chosen)
        last = chosen
    assert picks == [10, 20, 30, 10, 20]
    assert rules.next_round_robin(MEMBERS, 40) == 10  # cursor on a now-inactive member
    assert rules.next_round_robin(MEMBERS, 25) == 30  # on a removed one
    assert rules.next_round_robin([Member(1, active=False)], None) is None


def test_least_busy_takes_the_fewest_open_with_ties_in_turn() -> None:
    assert rules.least_busy(MEMBERS, {10: 3, 20: 1, 30: 2}, None) == 20
    assert rules.least_busy(MEMBERS, {10: 0, 20: 0, 30: 0}, 10) == 20
    assert rules.least_busy(MEMBERS, {10: 1}, 20) == 30  # 20 and 30 at 0: 30 is next
    assert rules.least_busy(MEMBERS, {40: 0, 10: 5, 20: 5, 30: 5}, None) == 10  # 40 inactive
    assert rules.least_busy([], {}, None) is None
