-- Custom fields of products (deployments/_kit/custom_fields.py), as customers have.
ALTER TABLE products ADD COLUMN custom_fields jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(custom_fields) = 'object');
CREATE INDEX products_custom_fields ON products USING gin (custom_fields jsonb_path_ops)
    WHERE deleted_at IS NULL;
