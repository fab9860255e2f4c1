-- Likely duplicates (deployments/customer/duplicates/): every customer's and contact's
-- match keys (`keys.py`: normalised e-mail, phone, name), each stored on the logical
-- shard its key hashes to, so all records sharing a key meet in one database whatever
-- shards the records live on. `id` is made by `nextflow_id(<the key's logical shard>)`,
-- so a row moves with that shard (SHARDED_TABLES). Written by the customer service's
-- event consumer from the records as they are; never the truth (readers check the
-- records).
CREATE TABLE match_keys (
    id        bigint PRIMARY KEY,
    object    text NOT NULL CHECK (object IN ('customer', 'contact')),
    key       text COLLATE "C" NOT NULL,
    record_id bigint NOT NULL,
    UNIQUE (object, key, record_id)
);
CREATE INDEX match_keys_by_record ON match_keys (record_id);

-- The keys two or more records share: what the duplicates list pages through (kept with
-- `match_keys` in the same transaction, under a lock per key).
CREATE TABLE duplicate_keys (
    id     bigint PRIMARY KEY,
    object text NOT NULL,
    key    text COLLATE "C" NOT NULL,
    UNIQUE (object, key)
);
