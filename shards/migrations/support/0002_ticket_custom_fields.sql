-- Custom fields of tickets (deployments/_kit/custom_fields.py), as customers have.
ALTER TABLE tickets ADD COLUMN custom_fields jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(custom_fields) = 'object');
CREATE INDEX tickets_custom_fields ON tickets USING gin (custom_fields jsonb_path_ops)
    WHERE deleted_at IS NULL;
