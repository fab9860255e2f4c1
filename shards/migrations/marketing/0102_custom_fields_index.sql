-- `cf.<key>[eq]=` and `[in]` filters on leads (deployments/_kit/custom_fields.py).
CREATE INDEX leads_custom_fields ON leads USING gin (custom_fields jsonb_path_ops)
    WHERE deleted_at IS NULL;
