"""Ticket summaries (extractive) and next best actions (explicit rules) — pure
functions. The summary runs in a Ray task (`tasks.summarize`); the rules are a few
comparisons on one record and run where they are asked.

Summary: the thread's sentences (description first, then comments in order) are
scored by the frequency of their content words across the whole thread, divided by
the square root of their length; the description's first sentence gets a bonus (it
usually states the problem). The best `n` are returned in thread order.

Next best action: every rule that applies, each with a weight and the reason in
words; the first is the one to do. Nothing is learned: each rule can be read here."""

from __future__ import annotations

import math
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from ai.search import tokens

STOP = frozenset(
    "a an and are as at be but by for from has have i if in is it its me my no not of on "
    "or our please so that the their them then there this to was we were what when with "
    "you your can could would should will just also any all do does did hi hello thanks "
    "thank regards".split()
)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if len(s.strip()) > 2]


def summarize(parts: list[tuple[str, str]], n: int = 3) -> dict[str, Any]:
    """`parts`: (who, text) in thread order; the first is the description."""
    found: list[tuple[int, int, str, str]] = []  # (part, position, who, sentence)
    for p, (who, text) in enumerate(parts):
        for i, s in enumerate(sentences(text)):
            found.append((p, i, who, s))
    if not found:
        return {"summary": "", "sentences": []}
    freq = Counter(w for *_, s in found for w in tokens(s) if w not in STOP)
    top = max(freq.values()) if freq else 1

    def weight(item: tuple[int, int, str, str]) -> float:
        part, position, _, s = item
        words = [w for w in tokens(s) if w not in STOP]
        if not words:
            return 0.0
        score = sum(freq[w] / top for w in words) / math.sqrt(len(words))
        return score * (1.5 if part == 0 and position == 0 else 1.0)

    best = sorted(range(len(found)), key=lambda k: (-weight(found[k]), k))[:n]
    chosen = [found[k] for k in sorted(best)]
    return {
        "summary": " ".join(s for *_, s in chosen),
        "sentences": [{"from": who, "text": s} for _, _, who, s in chosen],
    }


class Action(BaseModel):
    action: str
    weight: float
    reason: str


def ticket_actions(ticket: Any, now: datetime | None = None) -> list[Action]:
    """Rules for a ticket (a `TicketRead`)."""
    now = now or datetime.now(UTC)
    rank = {"urgent": 4, "high": 3, "normal": 2, "low": 1}.get(ticket.priority, 2)
    out: list[Action] = []
    if ticket.status in ("resolved", "closed"):
        return [Action(action="none", weight=0, reason=f"the ticket is {ticket.status}")]
    if ticket.sla_breached:
        out.append(Action(action="escalate", weight=90 + rank,
                          reason="an SLA target is already breached"))  # fmt: skip
    if ticket.assignee_id is None:
        out.append(Action(action="assign", weight=80 + rank, reason="nobody owns the ticket"))
    if ticket.first_response_at is None:
        left = ticket.first_response_due_at - now
        if left <= timedelta(hours=1):
            out.append(Action(action="respond_now", weight=85 + rank,
                              reason="the first response is due within the hour"))  # fmt: skip
        else:
            out.append(Action(action="respond", weight=50 + rank,
                              reason="the customer has had no answer yet"))  # fmt: skip
    if ticket.status == "pending" and now - ticket.updated_at > timedelta(days=3):
        out.append(Action(action="follow_up_customer", weight=40 + rank,
                          reason="waiting on the customer for more than 3 days"))  # fmt: skip
    if not out:
        out.append(Action(action="work_ticket", weight=10 + rank,
                          reason="open, answered, within its SLA"))  # fmt: skip
    return sorted(out, key=lambda a: -a.weight)


def deal_actions(deal: Any, lead_score: float | None, today: date | None = None) -> list[Action]:
    """Rules for a deal (a `DealRead`), weighted by its chance: the probability of its
    stage, or the score of the lead it came from when there is one."""
    today = today or datetime.now(UTC).date()
    if deal.status != "open":
        return [Action(action="none", weight=0, reason=f"the deal is {deal.status}")]
    chance = lead_score if lead_score is not None else deal.probability / 100
    boost = round(10 * chance, 2)
    out: list[Action] = []
    if deal.expected_close_date is not None and deal.expected_close_date < today:
        out.append(Action(action="update_close_date", weight=70 + boost,
                          reason="the expected close date has passed"))  # fmt: skip
    stalled = (datetime.now(UTC) - deal.stage_entered_at).days
    if stalled >= 14:
        out.append(Action(action="follow_up", weight=60 + boost,
                          reason=f"no stage change for {stalled} days"))  # fmt: skip
    if deal.contact_id is None:
        out.append(Action(action="add_contact", weight=40 + boost,
                          reason="no contact person on the deal"))  # fmt: skip
    if deal.probability >= 75:
        out.append(Action(action="prepare_order", weight=50 + boost,
                          reason=f"{deal.probability}% likely: get the order ready"))  # fmt: skip
    elif chance >= 0.6:
        reason = f"a strong lead (score {chance:.2f}) at {deal.probability}%"
        out.append(Action(action="advance_stage", weight=45 + boost, reason=reason))
    if not out:
        out.append(Action(action="qualify", weight=20 + boost,
                          reason="early stage: qualify needs and budget"))  # fmt: skip
    return sorted(out, key=lambda a: -a.weight)
