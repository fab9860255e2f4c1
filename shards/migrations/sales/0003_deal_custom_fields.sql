-- Custom fields of deals (deployments/_kit/custom_fields.py), as customers have.
ALTER TABLE deals ADD COLUMN custom_fields jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(custom_fields) = 'object');
CREATE INDEX deals_custom_fields ON deals USING gin (custom_fields jsonb_path_ops)
    WHERE deleted_at IS NULL;
