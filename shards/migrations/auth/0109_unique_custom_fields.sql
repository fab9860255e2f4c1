-- Unique custom fields (issue 25): a field made unique (when it is made: an existing
-- field's records could hold the same value twice) takes one record per value across
-- every shard. Records live on their shards, so the values are claimed here first
-- (deployments/_kit/unique_values.py): one row per field and value digest, held by a
-- write's token; `kept` once its record is written. A claim whose record no longer
-- holds the value is taken over by the next write that wants it.
ALTER TABLE custom_fields ADD COLUMN unique_values boolean NOT NULL DEFAULT false;
ALTER TABLE custom_fields ADD CONSTRAINT custom_fields_unique_types
    CHECK (NOT unique_values OR type IN ('text', 'email', 'url', 'phone', 'number', 'decimal'));

CREATE TABLE custom_field_claims (
    field_id   bigint NOT NULL REFERENCES custom_fields (id) ON DELETE CASCADE,
    digest     bytea NOT NULL,
    token      text NOT NULL,
    kept       boolean NOT NULL DEFAULT false,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (field_id, digest)
);
CREATE INDEX custom_field_claims_by_token ON custom_field_claims (token);
