"""Custom field values and filters as pure functions of the definitions
(deployments/_kit/custom_fields.py) and the `cf.` list parameters (gateway/listing.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from deployments._kit import custom_fields as cf
from deployments._kit.sql import Params
from deployments.customer.schemas import CustomerCreate, CustomerListQuery
from gateway.errors import BadRequest, Validation
from gateway.listing import CustomFilter, Position, parse_list_params


def definition(key: str, type: str, **more: Any) -> cf.FieldDefinition:
    now = datetime.now(UTC)
    return cf.FieldDefinition.model_validate({
        "id": 1, "object": "customers", "key": key, "label": key.title(), "description": None,
        "type": type, "required": False, "default": None, "options": [], "deleted": False,
        "version": 1, "created_at": now, "updated_at": now, **more,
    })  # fmt: skip


GOLD, SILVER = {"value": "gold", "label": "Gold"}, {"value": "silver", "label": "Silver"}
TIER = definition("tier", "single_select", options=[GOLD, SILVER])
DEFS = {
    "tier": TIER,
    "seats": definition("seats", "number", required=True),
    "revenue": definition("revenue", "decimal"),
    "renewal": definition("renewal", "date"),
    "seen": definition("seen", "datetime"),
    "vip": definition("vip", "boolean", default=False),
    "site": definition("site", "url"),
    "tags": definition(
        "tags", "multi_select", options=[{"value": "a", "label": "A"}, {"value": "b", "label": "B"}]
    ),  # fmt: skip
}


def test_values_are_checked_and_stored_in_one_form_per_type() -> None:
    got = cf.check(DEFS, {
        "tier": "gold", "seats": 12, "revenue": "1234.5000", "renewal": "2027-01-31",
        "seen": "2026-12-07T10:00:00+02:00", "site": " https://acme.io ", "tags": ["b", "b", "a"],
    }, creating=True)  # fmt: skip
    assert got == {
        "tier": "gold", "seats": 12, "revenue": "1234.5", "renewal": "2027-01-31",
        "seen": "2026-12-07T08:00:00.000000Z", "site": "https://acme.io", "tags": ["b", "a"],
        "vip": False,  # the default
    }  # fmt: skip


def test_every_bad_key_is_named_at_once() -> None:
    with pytest.raises(Validation) as caught:
        cf.check(DEFS, {"tier": "bronze", "nope": 1, "revenue": 1.5, "seen": "2026-12-07T10:00"},
                 creating=True)  # fmt: skip
    fields = {e["field"]: e["message"] for e in caught.value.errors}
    assert fields == {
        "custom_fields.tier": "must be one of gold, silver",
        "custom_fields.nope": "no such custom field",
        "custom_fields.revenue": 'must be a decimal as a string, such as "1234.50"',
        "custom_fields.seen": "must be a date-time with its offset (RFC 3339), years 1900 to 2199",
        "custom_fields.seats": "required",
    }


def test_an_update_clears_with_null_but_never_a_required_field() -> None:
    assert cf.check(DEFS, {"tier": None}, creating=False) == {"tier": None}
    assert cf.merge({"tier": None, "seats": 3}) == cf.Merge({"seats": 3}, ("tier",))
    with pytest.raises(Validation) as caught:
        cf.check(DEFS, {"seats": None}, creating=False)
    assert caught.value.errors == [{"field": "custom_fields.seats", "message": "required"}]
    assert cf.check(DEFS, {}, creating=False) == {}  # nothing required of an update


def test_deleted_fields_are_left_out_of_reads() -> None:
    assert cf.visible(DEFS, {"tier": "gold", "legacy": 1}) == {"tier": "gold"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([("cf.tier", "gold")], (CustomFilter("tier", "eq", ("gold",)),)),
        ([("cf.tier[in]", "gold,silver")], (CustomFilter("tier", "in", ("gold", "silver")),)),
        ([("cf.seats[gte]", "10"), ("cf.seats[lt]", "20")],
         (CustomFilter("seats", "gte", ("10",)), CustomFilter("seats", "lt", ("20",)))),
    ],
)  # fmt: skip
def test_cf_parameters_are_read_from_the_query_string(
    params: list[tuple[str, str]], expected: tuple[CustomFilter, ...]
) -> None:
    assert parse_list_params(params, CustomerListQuery).custom == expected


def test_bad_cf_parameters_and_values_are_422s_naming_them() -> None:
    for bad in ([("cf.Tier", "x")], [("cf.tier[like]", "x")], [("cf.tier", "")],
                [("cf.tier", "a"), ("cf.tier", "b")]):  # fmt: skip
        with pytest.raises(Validation):
            parse_list_params(bad, CustomerListQuery)
    filters = [CustomFilter("tier", "gt", ("gold",)), CustomFilter("seats", "eq", ("many",)),
               CustomFilter("nope", "eq", ("1",))]  # fmt: skip
    with pytest.raises(Validation) as caught:
        cf.typed_filters(DEFS, filters)
    assert [e["field"] for e in caught.value.errors] == [
        "cf.tier[gt]", "cf.seats[eq]", "cf.nope[eq]",
    ]  # fmt: skip


def test_filters_become_containment_and_guarded_ranges() -> None:
    typed = cf.typed_filters(DEFS, [
        CustomFilter("tier", "in", ("gold", "silver")), CustomFilter("tags", "eq", ("a",)),
        CustomFilter("seats", "gte", ("10",)), CustomFilter("renewal", "lt", ("2027-02-01",)),
    ])  # fmt: skip
    params = Params()
    sql = cf.filter_sql(params, "custom_fields", typed)
    assert sql[0] == "(custom_fields @> $1::jsonb OR custom_fields @> $2::jsonb)"
    assert params.values[:3] == [{"tier": "gold"}, {"tier": "silver"}, {"tags": ["a"]}]
    assert sql[2].startswith("CASE WHEN (custom_fields ->> $4) ~ ")
    assert sql[3] == '(custom_fields ->> $6) COLLATE "C" < $7'


def test_the_schema_spells_out_the_custom_fields() -> None:
    schema = cf.object_schema("customers", CustomerCreate, DEFS).json_schema
    custom = schema["properties"]["custom_fields"]
    assert custom["properties"]["tier"]["enum"] == ["gold", "silver"]
    assert custom["properties"]["tier"]["x-option-labels"] == {"gold": "Gold", "silver": "Silver"}
    assert custom["required"] == ["seats"] and "custom_fields" in schema["required"]
    assert custom["additionalProperties"] is False


def test_a_custom_field_sort_orders_as_the_database_does() -> None:
    assert cf.custom_sort(DEFS, "created_at") is None
    for bad in ("cf.nope", "cf.tags"):  # unknown; a multi select is not sortable
        with pytest.raises(Validation):
            cf.custom_sort(DEFS, bad)
    seats = cf.custom_sort(DEFS, "cf.seats")
    assert seats is not None and seats.numeric
    assert seats.sql().startswith("coalesce(CASE WHEN (custom_fields ->> 'seats') ~ ")
    values = [seats.value(v) for v in (12, None, 1.5, "3", True)]
    assert sorted(values) == [cf.NO_NUMBER, cf.NO_NUMBER, Decimal("1.5"), 3, 12]
    tier = cf.custom_sort(DEFS, "cf.tier")
    assert tier is not None and not tier.numeric
    assert tier.sql() == "coalesce((custom_fields ->> 'tier'), '') COLLATE \"C\""
    assert [tier.value(v) for v in ("gold", None, False)] == ["gold", "", "false"]
    position = seats.position(Position("12.5", 7))
    assert position == Position(Decimal("12.5"), 7)
    with pytest.raises(BadRequest):
        seats.position(Position("x", 7))


def test_unique_values_compare_in_stored_form() -> None:
    from deployments._kit.unique_values import digest

    mail = definition("billing", "email", unique=True)
    assert cf.stored(mail, "Ann.Lee@Example.COM") == "ann.lee@example.com"
    assert cf.stored(definition("cc", "email"), "Ann@Example.COM") == "Ann@example.com"
    assert digest("number", 7) == digest("number", 7.0) == digest("number", 7.00)
    assert digest("number", 70) != digest("number", 7)
    assert digest("text", "ACME-1") != digest("text", "acme-1")
    assert digest("text", "7") != digest("number", 7)  # one field has one type; still apart


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"type": "text"}, True),
        ({"type": "number"}, True),
        ({"type": "boolean"}, False),
        ({"type": "multi_select", "options": [GOLD]}, False),
        ({"type": "text", "default": "x"}, False),
    ],
)
def test_which_fields_may_be_unique(body: dict[str, Any], ok: bool) -> None:
    made = {"object": "customers", "key": "k", "label": "K", "unique": True, **body}
    if ok:
        assert cf.FieldCreate.model_validate(made).unique
    else:
        with pytest.raises(ValidationError, match="unique|options"):
            cf.FieldCreate.model_validate(made)
