-- nextflow_id() made the same id twice under load: a backend took a sequence value,
-- was descheduled for some milliseconds while other backends took 4096 more, then
-- read the clock in the same millisecond as one of those; the two ids were equal
-- (tests/integration/test_ids.py made several in 400,000 on 2 busy cores). Now the
-- clock is read before and after the sequence, and both must name the same
-- millisecond: the values of one millisecond were all taken within it, so two ids
-- can be equal only if a database takes more than 4096 values a millisecond (about
-- 770 a millisecond per core is what this function does).
--
-- The ids are made in one place, `nextflow_ids(shard, n)`: n ids in one call, for a
-- bulk import's thousands (0.9 us an id, against 1.7 for one call from SQL per id);
-- `nextflow_id(shard)` is the one-id case.
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

CREATE OR REPLACE FUNCTION nextflow_id(shard integer) RETURNS bigint
LANGUAGE sql VOLATILE AS $$ SELECT (nextflow_ids(shard, 1))[1] $$;
