-- 64-bit ids carrying their logical shard (layout in shards/ids.py).
CREATE SEQUENCE IF NOT EXISTS global_id_seq;

CREATE OR REPLACE FUNCTION nextflow_id(shard integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    epoch_ms constant bigint := 1767225600000;  -- 2026-01-01T00:00:00Z
    now_ms bigint;
    seq bigint;
BEGIN
    IF shard < 0 OR shard > 1023 THEN
        RAISE EXCEPTION 'logical shard % out of range', shard;
    END IF;
    seq := nextval('global_id_seq') % 4096;
    now_ms := floor(extract(epoch FROM clock_timestamp()) * 1000);
    RETURN ((now_ms - epoch_ms) << 22) | (shard::bigint << 12) | seq;
END
$$;
