"""The pure parts of events: the envelope a relay builds from an outbox row, what a
consumer accepts from a stream entry, and event `data` built from a record."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from deployments._kit.consumer import parse_entry
from deployments._kit.events import SCHEMA_VERSION, Event, record_data
from deployments.customer.schemas import CustomerRead
from shards.databases import SHARDED_TABLES
from shards.relay import event_json, stream_fields

NOW = datetime(2026, 11, 29, 1, 2, 3, tzinfo=UTC)


def _row() -> dict[str, object]:
    return {
        "id": 123,
        "event_id": uuid.UUID("6f1c1b52-40c4-4ad4-9a54-1c8e5a7c2a10"),
        "type": "deal.won",
        "version": 1,
        "aggregate_type": "deal",
        "aggregate_id": 9_007_199_254_740_993,  # beyond a JSON double's exact range
        "actor_id": None,
        "data": {"deal": {"id": "9007199254740993", "amount": "10.00"}},
        "occurred_at": NOW,
        "age": 0.5,
    }


def test_stream_fields_carry_the_event_id_type_and_envelope() -> None:
    fields = stream_fields(_row())
    assert fields["id"] == "6f1c1b52-40c4-4ad4-9a54-1c8e5a7c2a10"
    assert fields["type"] == "deal.won"
    event = parse_entry(fields)
    assert event.aggregate_id == 9_007_199_254_740_993
    assert event.occurred_at == NOW and event.version == SCHEMA_VERSION
    assert event.data["deal"]["amount"] == "10.00"
    assert '"aggregate_id":"9007199254740993"' in fields["event"]  # ids as strings


def test_naive_timestamps_are_read_as_utc() -> None:
    row = _row()
    row["occurred_at"] = NOW.replace(tzinfo=None)
    assert Event.model_validate_json(event_json(row)).occurred_at == NOW


@pytest.mark.parametrize(
    "fields",
    [{}, {"event": "not json"}, {"event": '{"id": "x"}'}, {"id": "x", "type": "a.b"}],
)
def test_unreadable_entries_are_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="event"):
        parse_entry(fields)


def test_record_data_is_the_api_record_plus_changes() -> None:
    customer = CustomerRead(
        id=5 << 22, name="Acme", email=None, phone=None, website=None, industry=None,
        tags=["a"], custom_fields={"n": 1}, owner_id=None, version=2,
        created_at=NOW, updated_at=NOW,
    )  # fmt: skip
    changes = {"name": ["Old", "Acme"], "owner_id": [None, 7], "probability": [1, 2]}
    data = record_data("customer", customer, changes, note=Decimal("1.50"))
    assert data["customer"]["id"] == str(5 << 22)
    assert data["customer"]["created_at"] == "2026-11-29T01:02:03Z"
    assert data["changes"] == {
        "name": ["Old", "Acme"], "owner_id": [None, "7"], "probability": [1, 2],
    }  # fmt: skip
    assert data["note"] == "1.50"
    assert "changes" not in record_data("customer", customer)


def test_processed_events_is_not_a_sharded_table() -> None:
    """Its rows carry no shard in an id: a shard move must not try to copy them."""
    assert all("processed_events" not in tables for tables in SHARDED_TABLES.values())


def test_the_relays_make_every_services_consumer_group() -> None:
    """The relays (shards/, which knows no service) take the groups from the settings:
    every group a service consumes with must be there."""
    from cluster.settings import Settings
    from deployments._kit.events import CONSUMER_GROUPS

    assert set(Settings.model_fields["event_consumer_groups"].default) == set(CONSUMER_GROUPS)


def test_every_setting_reaches_rays_workers_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack hands its settings to Ray's workers as NEXTFLOW_* variables; each one
    reads back to the same value (a list as JSON, as pydantic-settings parses it)."""
    from cluster.settings import StackSettings
    from cluster.stack import settings_env

    for key in [k for k in os.environ if k.startswith("NEXTFLOW_")]:
        monkeypatch.delenv(key)
    mine = StackSettings(event_consumer_groups=("notification", "extra"), shard_servers=3)
    for key, value in settings_env(mine).items():
        monkeypatch.setenv(key, value)
    assert StackSettings() == mine
