-- The change history (as `_sharded/0002_record_changes.sql`, with local ids), as
-- in `product/0001_products_price_books.sql`.
CREATE TABLE record_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record_type text NOT NULL,
    record_id   bigint NOT NULL,
    action      text NOT NULL,
    changes     jsonb NOT NULL DEFAULT '{}',
    actor_id    bigint,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX record_changes_by_record ON record_changes (record_type, record_id, created_at, id);
