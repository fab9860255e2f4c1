-- The change history of audited fields, one row per write that changed any
-- (`deployments/_kit/history.py`). Its id carries the logical shard of the record
-- it describes, so it moves with that record.
CREATE TABLE record_changes (
    id          bigint PRIMARY KEY,
    record_type text NOT NULL,
    record_id   bigint NOT NULL,
    action      text NOT NULL,
    changes     jsonb NOT NULL DEFAULT '{}',
    actor_id    bigint,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX record_changes_by_record ON record_changes (record_type, record_id, created_at, id);
