-- Bulk imports upsert by the caller's own id. A customer with an external id is placed
-- by a stable hash of it (`shards.place(key="ext:" + external_id)`), so this per-shard
-- unique index makes a re-import find the customer instead of making a second one.
-- Not partial: `INSERT ... ON CONFLICT (external_id)` must be able to infer it (NULLs
-- never conflict).
ALTER TABLE customers ADD COLUMN external_id text;
CREATE UNIQUE INDEX customers_external_id ON customers (external_id);
