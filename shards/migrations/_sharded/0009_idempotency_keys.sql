-- `Idempotency-Key`s kept with their effect (deployments/_kit/once.py): a create that is
-- one shard transaction inserts its caller's key here in that same transaction, so a
-- retry finds it exactly when the record exists. `result` is the record the create
-- answered with (JSON), replayed for a repeat with the same `fingerprint` (SHA-256 of
-- the request); it is set before the transaction commits, so nobody else ever sees it
-- empty. `id` is made by `nextflow_id(<the record's logical shard>)`: a row belongs to
-- its record's shard and moves with it (SHARDED_TABLES). Rows older than the retention
-- (24 h by default) are swept.
CREATE TABLE idempotency_keys (
    id          bigint PRIMARY KEY,
    caller      text        NOT NULL,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    result      bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (caller, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
