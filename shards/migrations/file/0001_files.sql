-- File metadata, on its owner record's logical shard (the id carries that shard, so a
-- shard move takes a record's files with it). A row exists only once the content is
-- fully stored under `blob_key` and verified: there is no "uploading" state to hide.
CREATE TABLE files (
    id            bigint PRIMARY KEY,
    owner_type    text NOT NULL
                  CHECK (owner_type IN ('customer', 'contact', 'deal', 'ticket', 'lead')),
    owner_id      bigint NOT NULL,
    filename      text NOT NULL CHECK (length(filename) BETWEEN 1 AND 255),
    content_type  text NOT NULL,
    size_bytes    bigint NOT NULL CHECK (size_bytes >= 0),
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    blob_key      text NOT NULL UNIQUE,
    status        text NOT NULL DEFAULT 'ready' CHECK (status IN ('ready', 'deleted')),
    uploaded_by   bigint,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE INDEX files_by_owner ON files (owner_type, owner_id, created_at, id)
    WHERE deleted_at IS NULL;
