-- Exactly-once effects for event consumers (deployments/_kit/consumer.py,
-- `first_time`): a consumer inserts (its name, the event id) in the same transaction
-- as the effect; a redelivered event finds its row and the effect is skipped.
-- Keyed by the event id, not by a global id: its rows belong to no logical shard, so
-- the table is NOT in SHARDED_TABLES and a shard move does not copy it. A mark stays
-- on the server where the effect was applied (an event redelivered after its target
-- record moved away could be applied again there; redeliveries come within minutes,
-- moves are rare). The relay deletes marks older than `processed_events_retention_s`.
CREATE TABLE processed_events (
    consumer     text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX processed_events_by_age ON processed_events (processed_at);
