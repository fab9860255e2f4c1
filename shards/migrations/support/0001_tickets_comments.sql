-- Tickets live on their customer's logical shard (their id carries it); comments live
-- with their ticket. Status: new -> assigned -> pending -> resolved -> closed
-- (deployments/support/rules.py has the transitions and the SLA clock).
CREATE TABLE tickets (
    id                     bigint PRIMARY KEY,
    customer_id            bigint NOT NULL,
    contact_id             bigint,
    subject                text NOT NULL CHECK (length(subject) BETWEEN 1 AND 300),
    description            text NOT NULL DEFAULT '',
    priority               text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    priority_rank          smallint GENERATED ALWAYS AS (
                               CASE priority WHEN 'low' THEN 1 WHEN 'normal' THEN 2
                                             WHEN 'high' THEN 3 ELSE 4 END) STORED,
    status                 text NOT NULL DEFAULT 'new'
                           CHECK (status IN ('new', 'assigned', 'pending', 'resolved', 'closed')),
    queue_id               bigint,
    assignee_id            bigint,
    channel                text NOT NULL DEFAULT 'web'
                           CHECK (channel IN ('email', 'phone', 'web', 'chat', 'api')),
    tags                   text[] NOT NULL DEFAULT '{}',
    requester_id           bigint,
    first_response_at      timestamptz,
    resolved_at            timestamptz,
    closed_at              timestamptz,
    first_response_due_at  timestamptz NOT NULL,
    resolution_due_at      timestamptz NOT NULL,
    -- The resolution clock is stopped while pending or resolved: since when, and the
    -- seconds it has been stopped in total (each resume pushes resolution_due_at).
    sla_paused_at          timestamptz,
    sla_paused_s           double precision NOT NULL DEFAULT 0,
    first_response_breached boolean NOT NULL DEFAULT false,
    resolution_breached    boolean NOT NULL DEFAULT false,
    version                integer NOT NULL DEFAULT 1,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    deleted_at             timestamptz
);
CREATE INDEX tickets_by_created ON tickets (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tickets_by_customer ON tickets (customer_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tickets_by_assignee ON tickets (assignee_id, status) WHERE deleted_at IS NULL;
CREATE INDEX tickets_by_queue ON tickets (queue_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tickets_by_resolution_due ON tickets (resolution_due_at, id) WHERE deleted_at IS NULL;
CREATE INDEX tickets_by_priority ON tickets (priority_rank, id) WHERE deleted_at IS NULL;
-- What the SLA sweep scans: open clocks that are not flagged yet.
CREATE INDEX tickets_first_response_open ON tickets (first_response_due_at)
    WHERE deleted_at IS NULL AND first_response_at IS NULL AND NOT first_response_breached;
CREATE INDEX tickets_resolution_open ON tickets (resolution_due_at)
    WHERE deleted_at IS NULL AND sla_paused_at IS NULL AND NOT resolution_breached;

CREATE TABLE ticket_comments (
    id          bigint PRIMARY KEY,
    ticket_id   bigint NOT NULL REFERENCES tickets (id),
    author_id   bigint,
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    public      boolean NOT NULL DEFAULT false,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX ticket_comments_by_ticket ON ticket_comments (ticket_id, created_at, id);
