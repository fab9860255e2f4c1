-- `cf.<key>[eq]=` and `[in]` filters on customers are jsonb containment
-- (`custom_fields @> '{"key": value}'`), answered by this index whatever the key
-- (deployments/_kit/custom_fields.py; bench/custom_fields.py measures it).
CREATE INDEX customers_custom_fields ON customers USING gin (custom_fields jsonb_path_ops)
    WHERE deleted_at IS NULL;
