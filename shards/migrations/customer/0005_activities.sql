-- Activities (issue 25): notes, tasks, calls, meetings and logged e-mails.
-- An activity lives on its customer's logical shard (its id carries that shard, so a
-- shard move takes it along with the customer); a lead's activity made before the
-- lead is converted lives on the lead's logical shard with `customer_id` null, and
-- the conversion gives it the customer (deployments/customer/activities/repo.py,
-- `adopt_lead`). deal_id, lead_id and ticket_id point into other services'
-- databases (checked by the service when given); contact_id into this one.
CREATE TABLE activities (
    id               bigint PRIMARY KEY,
    kind             text NOT NULL
                     CHECK (kind IN ('note', 'task', 'call', 'meeting', 'email')),
    customer_id      bigint,
    contact_id       bigint,
    deal_id          bigint,
    lead_id          bigint,
    ticket_id        bigint,
    subject          text NOT NULL CHECK (length(subject) BETWEEN 1 AND 300),
    body             text CHECK (length(body) <= 20000),
    owner_id         bigint,
    -- tasks
    due_at           timestamptz,
    assignee_id      bigint,
    priority         text CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    done_at          timestamptz,
    remind_at        timestamptz,
    reminded_at      timestamptz,
    -- calls, meetings and e-mails: when it happened (or will), how long, who took part
    occurred_at      timestamptz,
    duration_minutes integer CHECK (duration_minutes BETWEEN 0 AND 10080),
    participants     jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(participants) = 'array'),
    outcome          text CHECK (length(outcome) <= 2000),
    direction        text CHECK (direction IN ('inbound', 'outbound')),
    -- where it stands on the customer's timeline: when it happened, else when logged
    at               timestamptz GENERATED ALWAYS AS (coalesce(occurred_at, created_at)) STORED,
    -- the id this row had on the lead's shard, when a conversion moved it here
    origin_id        bigint UNIQUE,
    version          integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    CHECK (customer_id IS NOT NULL OR lead_id IS NOT NULL),
    CHECK (kind = 'task' OR (due_at IS NULL AND assignee_id IS NULL AND done_at IS NULL
                             AND remind_at IS NULL))
);
-- A customer's timeline and activity list, newest first.
CREATE INDEX activities_by_customer ON activities (customer_id, at, id)
    WHERE deleted_at IS NULL AND customer_id IS NOT NULL;
-- A lead's activities (before and after its conversion).
CREATE INDEX activities_by_lead ON activities (lead_id, at, id)
    WHERE deleted_at IS NULL AND lead_id IS NOT NULL;
-- "My open tasks", by due date, on every server.
CREATE INDEX activities_open_tasks ON activities (assignee_id, due_at, id)
    WHERE kind = 'task' AND done_at IS NULL AND deleted_at IS NULL;
-- Reminders the sweep has still to send.
CREATE INDEX activities_reminders_due ON activities (remind_at)
    WHERE remind_at IS NOT NULL AND reminded_at IS NULL AND done_at IS NULL
      AND deleted_at IS NULL;
