-- Deals (opportunities) live on their customer's logical shard: a deal's id is
-- nextflow_id(shard of customer_id), and so is every stage-history row's.
-- customer_id, contact_id, owner_id, pipeline_id and stage_id point into other
-- databases (customer, auth, sales_config): plain bigints, checked by the service.
CREATE TABLE deals (
    id                  bigint PRIMARY KEY,
    customer_id         bigint NOT NULL,
    contact_id          bigint,
    name                text COLLATE "C" NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    amount              numeric NOT NULL CHECK (amount >= 0),
    currency            char(3) NOT NULL,
    pipeline_id         bigint NOT NULL,
    stage_id            bigint NOT NULL,
    probability         integer NOT NULL CHECK (probability BETWEEN 0 AND 100),
    status              text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'won', 'lost')),
    close_reason        text,
    closed_at           timestamptz,
    owner_id            bigint,
    expected_close_date date,
    -- Idempotency of creates made by other services (lead conversion): one deal per key.
    source_key          text,
    stage_entered_at    timestamptz NOT NULL DEFAULT now(),
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    CHECK ((status = 'open') = (closed_at IS NULL))
);
CREATE UNIQUE INDEX deals_by_source_key ON deals (source_key) WHERE source_key IS NOT NULL;
CREATE INDEX deals_by_created ON deals (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX deals_by_amount ON deals (amount, id) WHERE deleted_at IS NULL;
CREATE INDEX deals_by_close_date
    ON deals ((COALESCE(expected_close_date, DATE '9999-12-31')), id) WHERE deleted_at IS NULL;
CREATE INDEX deals_by_customer ON deals (customer_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX deals_by_owner ON deals (owner_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX deals_by_stage ON deals (stage_id, created_at, id) WHERE deleted_at IS NULL;

-- One row per stage transition (creation included), on the deal's shard.
CREATE TABLE deal_stage_changes (
    id                bigint PRIMARY KEY,
    deal_id           bigint NOT NULL REFERENCES deals (id),
    from_pipeline_id  bigint,
    from_stage_id     bigint,
    to_pipeline_id    bigint NOT NULL,
    to_stage_id       bigint NOT NULL,
    probability       integer NOT NULL,
    status            text NOT NULL,
    changed_by        bigint,
    changed_at        timestamptz NOT NULL DEFAULT now(),
    seconds_in_previous_stage double precision
);
CREATE INDEX deal_stage_changes_by_deal ON deal_stage_changes (deal_id, changed_at, id);
