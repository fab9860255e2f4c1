"""Cursor pages merged across shards: every record exactly once, in global order."""

from __future__ import annotations

import base64
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from ray import cloudpickle

from deployments.customer.schemas import CustomerListQuery, CustomerRead, CustomerSearch
from deployments.marketing.schemas import LeadListQuery
from deployments.product.schemas import PriceListQuery
from deployments.sales.schemas import DealListQuery
from deployments.support.schemas import TicketListQuery, TicketSearch
from gateway.errors import BadRequest, Validation
from gateway.listing import (
    Page,
    Position,
    SavedQuery,
    decode_cursor,
    may_use,
    merge_pages,
    parse_list_params,
    search_query,
    with_view,
)


@dataclass(frozen=True)
class Row:
    id: int
    name: str
    created_at: datetime


def _shard_query(rows: list[Row], field: str, desc: bool, pos: Position | None, limit: int):
    """What a shard's repo does: rows strictly after the position, ordered, limit + 1."""

    def key(r: Row) -> tuple[object, int]:
        return (getattr(r, field), r.id)

    chosen = sorted(rows, key=key, reverse=desc)
    if pos is not None:
        after = (pos.value, pos.id)
        chosen = [r for r in chosen if (key(r) < after if desc else key(r) > after)]
    return chosen[: limit + 1]


BASE = datetime(2026, 1, 1, tzinfo=UTC)
rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 4),  # shard
        st.sampled_from(["Acme", "acme", "Zeta", "Été", "beta", "B"]),
        st.integers(0, 5),  # few distinct timestamps: ties on the sort key are common
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    rows_strategy,
    st.sampled_from(["created_at", "-created_at", "name", "-name"]),
    st.integers(1, 7),
)
def test_pages_never_skip_or_repeat(
    spec: list[tuple[int, str, int]], sort: str, limit: int
) -> None:
    shards: list[list[Row]] = [[] for _ in range(5)]
    for i, (shard, name, t) in enumerate(spec):
        shards[shard].append(Row(i + 1, name, BASE + timedelta(seconds=t)))
    field, desc = sort.lstrip("-"), sort.startswith("-")

    seen: list[Row] = []
    cursor = None
    for _ in range(100):
        query = CustomerListQuery(sort=sort, limit=limit, cursor=cursor)
        pos = decode_cursor(query)
        runs = [_shard_query(s, field, desc, pos, limit) for s in shards]
        page, cursor = merge_pages(runs, lambda r: (getattr(r, field), r.id), query.order, limit)
        seen.extend(page)
        if cursor is None:
            break
    everything = sorted(
        (r for s in shards for r in s), key=lambda r: (getattr(r, field), r.id), reverse=desc
    )
    assert [r.id for r in seen] == [r.id for r in everything]


def test_unknown_filters_and_sorts_are_refused() -> None:
    with pytest.raises(Validation) as err:
        parse_list_params([("colour", "red")], CustomerListQuery)
    assert err.value.errors[0]["field"] == "colour"
    with pytest.raises(Validation) as err:
        parse_list_params([("sort", "-email")], CustomerListQuery)
    assert err.value.errors[0]["field"] == "sort"
    with pytest.raises(Validation) as err:
        parse_list_params([("limit", "201")], CustomerListQuery)
    assert err.value.errors[0]["field"] == "limit"


def test_filters_map_to_the_query() -> None:
    query = parse_list_params(
        [
            ("name[prefix]", "Ac"),
            ("tag[in]", "vip,eu"),
            ("tag", "new"),
            ("sort", "name"),
            ("created_at[gte]", "2026-01-01T00:00:00Z"),
            ("owner_id", "17"),
        ],
        CustomerListQuery,
    )
    assert query.name_prefix == "Ac"
    assert query.tags == ["vip", "eu", "new"]
    assert query.owner_id == 17
    assert query.created_from == BASE


def test_a_cursor_from_another_sort_or_garbage_is_refused() -> None:
    rows = [[Row(1, "a", BASE), Row(2, "b", BASE)]]
    query = CustomerListQuery(sort="name", limit=1)
    _, cursor = merge_pages(rows, lambda r: (r.name, r.id), query.order, 1)
    assert cursor is not None
    with pytest.raises(BadRequest):
        decode_cursor(CustomerListQuery(sort="-created_at", cursor=cursor))
    with pytest.raises(BadRequest):
        decode_cursor(CustomerListQuery(cursor="!!!not-a-cursor"))


def _cursor(data: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


@pytest.mark.parametrize(
    ("query", "data"),
    [
        # Ids are positive bigints: 2^63 (issue 28's 500), 0, -1, and not a number.
        (CustomerListQuery, {"s": "-created_at", "v": "2026-12-06T18:59:47+00:00", "i": 2**63}),
        (CustomerListQuery, {"s": "-created_at", "v": "2026-12-06T18:59:47+00:00", "i": 0}),
        (CustomerListQuery, {"s": "-created_at", "v": "2026-12-06T18:59:47+00:00", "i": "5"}),
        (CustomerListQuery, {"s": "-created_at", "v": "2026-12-06T18:59:47+00:00", "i": 5.0}),
        (CustomerListQuery, {"s": "-created_at", "v": "2026-12-06T18:59:47+00:00", "i": True}),
        # Sort values of the sort field's kind, in its column's range.
        (CustomerListQuery, {"s": "-created_at", "v": "2026-12-06T18:59:47", "i": 5}),
        (CustomerListQuery, {"s": "-created_at", "v": 1765047587, "i": 5}),
        (CustomerListQuery, {"s": "name", "v": 7, "i": 5}),
        (CustomerListQuery, {"s": "name", "v": ["x"], "i": 5}),
        (TicketListQuery, {"s": "priority", "v": 2**15, "i": 5}),
        (TicketListQuery, {"s": "priority", "v": "2", "i": 5}),
        (PriceListQuery, {"s": "product_id", "v": 2**63, "i": 5}),
        (LeadListQuery, {"s": "-score", "v": None, "i": 5}),
        (DealListQuery, {"s": "amount", "v": "NaN", "i": 5}),
        (DealListQuery, {"s": "amount", "v": "Infinity", "i": 5}),
        (DealListQuery, {"s": "amount", "v": 12.5, "i": 5}),
        (CustomerListQuery, ["-created_at", "2026-12-06T18:59:47+00:00", 5]),
    ],
)
def test_every_cursor_field_is_type_and_range_checked(query: type, data: object) -> None:
    sort = data["s"] if isinstance(data, dict) else "-created_at"
    with pytest.raises(BadRequest) as refused:
        decode_cursor(query(sort=sort, cursor=_cursor(data)))
    assert refused.value.errors == [{"field": "cursor", "message": "not a cursor from this list"}]


def test_cursors_at_the_edges_of_their_ranges_are_taken() -> None:
    at = "2026-12-06T18:59:47+00:00"

    def decoded(query: type, sort: str, value: object, row_id: int) -> Position | None:
        return decode_cursor(query(sort=sort, cursor=_cursor({"s": sort, "v": value, "i": row_id})))

    big = decoded(CustomerListQuery, "-created_at", at, 2**63 - 1)
    assert big == Position(datetime.fromisoformat(at), 2**63 - 1)
    assert decoded(TicketListQuery, "priority", 4, 9) == Position(4, 9)
    assert decoded(DealListQuery, "amount", "12.50", 9) == Position(Decimal("12.50"), 9)
    assert decoded(LeadListQuery, "-score", 3, 9) == Position(3.0, 9)


@settings(max_examples=100, deadline=None)
@given(rows_strategy, rows_strategy, st.sampled_from(["name", "-created_at", "created_at"]))
def test_inserts_between_pages_never_shift_a_page(
    before: list[tuple[int, str, int]], inserted: list[tuple[int, str, int]], sort: str
) -> None:
    """Rows that existed when paging began are each seen exactly once, whatever is
    inserted on any shard between pages."""
    shards: list[list[Row]] = [[] for _ in range(5)]
    for i, (shard, name, t) in enumerate(before):
        shards[shard].append(Row(i + 1, name, BASE + timedelta(seconds=t)))
    original = {r.id for s in shards for r in s}
    field, desc = sort.lstrip("-"), sort.startswith("-")
    pending = [
        Row(1000 + i, n, BASE + timedelta(seconds=t)) for i, (_, n, t) in enumerate(inserted)
    ]
    targets = [shard for shard, _, _ in inserted]

    seen: list[int] = []
    cursor = None
    for _ in range(200):
        query = CustomerListQuery(sort=sort, limit=3, cursor=cursor)
        pos = decode_cursor(query)
        runs = [_shard_query(s, field, desc, pos, 3) for s in shards]
        page, cursor = merge_pages(runs, lambda r: (getattr(r, field), r.id), query.order, 3)
        seen += [r.id for r in page]
        if pending:  # a write lands somewhere before the next page is asked for
            shards[targets.pop()].append(pending.pop())
        if cursor is None:
            break
    assert len(seen) == len(set(seen))  # nothing twice
    assert original <= set(seen)  # nothing that existed is skipped


def test_a_page_crosses_a_ray_hop_without_its_class() -> None:
    """Ray pickles what a deployment returns with cloudpickle; `Page[CustomerRead]` has
    no importable name, and shipped by value the class cost more than the customers."""
    now = datetime.now(UTC)
    customers = [
        CustomerRead(
            id=n,
            name=f"c{n}",
            email=None,
            phone=None,
            website=None,
            industry=None,
            tags=["a"],
            custom_fields={},
            owner_id=1,
            external_id=None,
            version=1,
            created_at=now,
            updated_at=now,
        )  # fmt: skip
        for n in range(1, 51)
    ]
    for page in (Page[CustomerRead](data=customers, next_cursor="x"), Page[CustomerRead](data=[])):
        sent = cloudpickle.dumps(page)
        assert b"_make_skeleton_class" not in sent  # cloudpickle's class-by-value
        back = pickle.loads(sent)
        assert type(back) is Page[CustomerRead]
        assert back == page and back.model_fields_set == page.model_fields_set
    assert len(cloudpickle.dumps(Page[CustomerRead](data=customers))) < 1.1 * len(
        cloudpickle.dumps(customers)
    )


def test_a_search_body_reads_as_the_query_string_with_the_same_names() -> None:
    body = CustomerSearch.model_validate({
        "filter": {"name[prefix]": "Ac", "tag[in]": ["vip", "eu"], "tag": ["new"],
                   "created_at[gte]": "2026-01-01T00:00:00Z", "owner_id": "17"},
        "sort": "name", "limit": 10,
    })  # fmt: skip
    same = parse_list_params(
        [("name[prefix]", "Ac"), ("tag", "new"), ("tag[in]", "vip,eu"), ("sort", "name"),
         ("created_at[gte]", "2026-01-01T00:00:00Z"), ("owner_id", "17"), ("limit", "10")],
        CustomerListQuery,
    )  # fmt: skip
    assert search_query(body, CustomerListQuery) == same
    tickets = search_query(
        TicketSearch.model_validate(
            {"filter": {"status[in]": ["new", "pending"]}, "sort": "-priority"}
        ),
        TicketListQuery,
    )
    assert tickets.statuses == ["new", "pending"] and tickets.sort == "-priority"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"filter": {"name[prefix]": ""}}, "filter.name[prefix]"),
        ({"filter": {"name[prefix]": "x" * 201}}, "filter.name[prefix]"),
    ],
)
def test_a_bad_search_names_the_filter_as_the_caller_spelled_it(
    body: dict[str, object], field: str
) -> None:
    with pytest.raises(Validation) as err:
        search_query(CustomerSearch.model_validate(body), CustomerListQuery)
    assert [e["field"] for e in err.value.errors] == [field]


@pytest.mark.parametrize(
    "body", [{"filter": {"colour": "red"}}, {"sort": "-email"}, {"filter": {"tag[in]": "a,b"}},
             {"name_prefix": "Ac"}],
)  # fmt: skip
def test_a_search_body_refuses_what_the_list_does_not_take(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CustomerSearch.model_validate(body)


def test_a_saved_view_lies_under_the_request_and_whose_it_is() -> None:
    view = SavedQuery(
        id=1, object="customers", owner_id=7, shared=False,
        filters=(("tag[in]", "vip,eu"), ("name[prefix]", "Ac")), sort="name",
    )  # fmt: skip
    over = parse_list_params(
        with_view([("name[prefix]", "Zz"), ("limit", "5")], view, CustomerListQuery),
        CustomerListQuery,
    )
    assert (over.tags, over.name_prefix, over.sort, over.limit) == (["vip", "eu"], "Zz", "name", 5)
    # A field the request gives replaces the view's, whichever spelling either used.
    tagged = parse_list_params(
        with_view([("tag", "x")], view, CustomerListQuery), CustomerListQuery
    )
    assert tagged.tags == ["x"] and tagged.name_prefix == "Ac"
    resorted = with_view([("sort", "-created_at")], view, CustomerListQuery)
    assert parse_list_params(resorted, CustomerListQuery).sort == "-created_at"
    assert may_use(7, False, 7, frozenset())
    assert not may_use(7, False, 8, frozenset({7, 8}))  # private: not the team's
    assert may_use(7, True, 8, frozenset({7, 8})) and not may_use(7, True, 9, frozenset({9}))
