-- `Idempotency-Key` on POST (gateway/idempotency.py): the first response per caller and
-- key, replayed for a repeat. A row is claimed (`status` NULL) while its request runs;
-- `locked_until` lets a retry take over a claim whose gateway died mid-request, and
-- `claim` (new for every take-over) keeps a late first request from overwriting. Rows
-- older than the retention (24 h by default) are swept. Numbered 0401+ so it never
-- collides with migrations other services add to this folder at the same time.
CREATE TABLE idempotency_keys (
    caller       text        NOT NULL,
    key          text        NOT NULL,
    claim        uuid        NOT NULL,
    fingerprint  bytea,
    status       smallint,
    headers      text[],
    body         bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
