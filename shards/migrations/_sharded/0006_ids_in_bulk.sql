-- `n` ids of one logical shard in one call, each made as `nextflow_id()` makes one
-- (0005: the clock read before and after its sequence value names one millisecond).
-- A bulk import asks for thousands at once: one call from SQL instead of one per id
-- costs about half the time per id (0.9 against 1.7 us measured).
CREATE OR REPLACE FUNCTION nextflow_ids(shard integer, n integer) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    epoch_ms constant bigint := 1767225600000;  -- 2026-01-01T00:00:00Z
    before_ms bigint;
    now_ms bigint;
    seq bigint;
    made bigint[] := '{}';
BEGIN
    IF shard < 0 OR shard > 1023 THEN
        RAISE EXCEPTION 'logical shard % out of range', shard;
    END IF;
    FOR i IN 1..n LOOP
        LOOP
            before_ms := floor(extract(epoch FROM clock_timestamp()) * 1000);
            seq := nextval('global_id_seq') % 4096;
            now_ms := floor(extract(epoch FROM clock_timestamp()) * 1000);
            EXIT WHEN now_ms = before_ms;
        END LOOP;
        made := made || (((now_ms - epoch_ms) << 22) | (shard::bigint << 12) | seq);
    END LOOP;
    RETURN made;
END
$$;
