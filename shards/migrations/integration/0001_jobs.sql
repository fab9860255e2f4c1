-- Long-running work (bulk imports) as jobs: state, progress and result, polled by
-- `GET /jobs/{id}`. The worker moves a job queued -> running -> succeeded/failed and
-- only while it is still running (a cancel wins over a late progress update).
CREATE TABLE jobs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL,
    status      text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    done        bigint NOT NULL DEFAULT 0,
    total       bigint,
    result      jsonb,
    error       text,
    created_by  bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX jobs_running ON jobs (updated_at) WHERE status IN ('queued', 'running');
