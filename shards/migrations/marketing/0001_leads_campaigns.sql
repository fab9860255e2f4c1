-- Campaigns (random shard) with their members (the campaign's shard), leads (placed
-- by a stable hash of lower(email), else a random shard) and lead conversions (the
-- lead's shard). References to other services' records (customers, contacts, deals,
-- users) are plain bigints.
CREATE TABLE campaigns (
    id                bigint PRIMARY KEY,
    name              text COLLATE "C" NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    type              text NOT NULL,
    status            text NOT NULL,
    budget_amount     numeric(18, 4),
    budget_currency   text,
    expected_revenue_amount   numeric(18, 4),
    expected_revenue_currency text,
    start_date        date,
    end_date          date,
    description       text,
    owner_id          bigint,
    version           integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    CHECK (end_date IS NULL OR start_date IS NULL OR end_date >= start_date)
);
CREATE INDEX campaigns_by_created ON campaigns (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX campaigns_by_name ON campaigns (name, id) WHERE deleted_at IS NULL;
CREATE INDEX campaigns_by_start ON campaigns (start_date, id) WHERE deleted_at IS NULL;

-- A member is a contact or a lead (exactly one), once per campaign.
CREATE TABLE campaign_members (
    id          bigint PRIMARY KEY,
    campaign_id bigint NOT NULL REFERENCES campaigns (id),
    contact_id  bigint,
    lead_id     bigint,
    status      text NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    CHECK ((contact_id IS NULL) <> (lead_id IS NULL))
);
CREATE UNIQUE INDEX campaign_members_contact ON campaign_members (campaign_id, contact_id)
    WHERE contact_id IS NOT NULL;
CREATE UNIQUE INDEX campaign_members_lead ON campaign_members (campaign_id, lead_id)
    WHERE lead_id IS NOT NULL;
CREATE INDEX campaign_members_by_campaign ON campaign_members (campaign_id, created_at, id)
    WHERE deleted_at IS NULL;
CREATE INDEX campaign_members_by_campaign_id ON campaign_members (campaign_id);

CREATE TABLE leads (
    id            bigint PRIMARY KEY,
    first_name    text,
    last_name     text,
    email         text,
    phone         text,
    company       text,
    title         text,
    source        text NOT NULL,
    status        text NOT NULL,
    owner_id      bigint,
    campaign_id   bigint,
    score         double precision,
    notes         text,
    custom_fields jsonb NOT NULL DEFAULT '{}',
    capture_count integer NOT NULL DEFAULT 0,
    last_captured_at timestamptz,
    converted_customer_id bigint,
    converted_contact_id  bigint,
    converted_deal_id     bigint,
    converted_at  timestamptz,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
-- Leads with an e-mail live on the shard of hash(lower(email)), so this per-shard
-- index is a global uniqueness check. It includes soft-deleted leads: a duplicate of
-- a deleted lead is refused (restore that one instead), and a restore never collides.
CREATE UNIQUE INDEX leads_email ON leads ((lower(email))) WHERE email IS NOT NULL;
CREATE INDEX leads_by_created ON leads (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX leads_by_score ON leads ((coalesce(score, -1)), id) WHERE deleted_at IS NULL;
CREATE INDEX leads_by_status ON leads (status, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX leads_by_owner ON leads (owner_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX leads_by_campaign ON leads (campaign_id, created_at, id) WHERE deleted_at IS NULL;

-- The recorded state of one lead's conversion (a resumable, idempotent saga).
CREATE TABLE lead_conversions (
    id           bigint PRIMARY KEY,
    lead_id      bigint NOT NULL UNIQUE REFERENCES leads (id),
    state        text NOT NULL CHECK (state IN
                   ('started', 'customer_done', 'contact_done', 'deal_done', 'completed')),
    options      jsonb NOT NULL,
    customer_id  bigint,
    contact_id   bigint,
    deal_id      bigint,
    attempts     integer NOT NULL DEFAULT 1,
    last_error   text,
    actor_id     bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX lead_conversions_open ON lead_conversions (updated_at, id)
    WHERE state <> 'completed';
