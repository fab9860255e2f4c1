-- The transactional outbox (deployments/_kit/events.py): a write that others care
-- about appends its event here in the same transaction. The relay (one per server)
-- moves unsent rows to the Redis stream in id order and marks them sent. The id
-- carries the logical shard of the aggregate, so unsent events move with it.
CREATE TABLE outbox (
    id             bigint PRIMARY KEY,
    event_id       uuid NOT NULL UNIQUE,
    type           text NOT NULL,
    version        integer NOT NULL DEFAULT 1,
    aggregate_type text NOT NULL,
    aggregate_id   bigint NOT NULL,
    actor_id       bigint,
    data           jsonb NOT NULL,
    occurred_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at        timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
