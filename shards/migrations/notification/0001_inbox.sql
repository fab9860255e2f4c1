-- The Notification service, sharded by recipient: every row of a user lives on the
-- logical shard `place(key="user:<id>")` and its id carries that shard.

-- The in-app inbox. One notification per (event, recipient): an event handled twice
-- (at-least-once delivery) adds nothing the second time.
CREATE TABLE notifications (
    id           bigint PRIMARY KEY,
    recipient_id bigint NOT NULL,
    event_id     uuid NOT NULL,
    event_type   text NOT NULL,
    title        text NOT NULL,
    body         text NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}',
    read_at      timestamptz,
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    UNIQUE (event_id, recipient_id)
);
CREATE INDEX notifications_inbox ON notifications (recipient_id, created_at, id)
    WHERE deleted_at IS NULL;
CREATE INDEX notifications_unread ON notifications (recipient_id)
    WHERE read_at IS NULL AND deleted_at IS NULL;

-- E-mails, one per (event, recipient), written with the event's effects and sent
-- after commit. A sender claims a row (status 'sending' with a lease), sends, then
-- records sent_at: a retry of the event finds it sent and does not send again.
CREATE TABLE notification_emails (
    id           bigint PRIMARY KEY,
    recipient_id bigint NOT NULL,
    event_id     uuid NOT NULL,
    to_address   text NOT NULL,
    subject      text NOT NULL,
    body         text NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    claimed_at   timestamptz,
    last_error   text,
    sent_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, recipient_id)
);
CREATE INDEX notification_emails_unsent ON notification_emails (id)
    WHERE status IN ('pending', 'sending');

-- Per-user channel choices per rule: {"ticket.assigned": {"in_app": true, "email": false}}.
-- A rule or channel not named here is on.
CREATE TABLE notification_preferences (
    id         bigint PRIMARY KEY,
    user_id    bigint NOT NULL UNIQUE,
    rules      jsonb NOT NULL DEFAULT '{}',
    version    integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
