-- Custom fields of contacts (deployments/_kit/custom_fields.py), as customers have.
ALTER TABLE contacts ADD COLUMN custom_fields jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(custom_fields) = 'object');
CREATE INDEX contacts_custom_fields ON contacts USING gin (custom_fields jsonb_path_ops)
    WHERE deleted_at IS NULL;
