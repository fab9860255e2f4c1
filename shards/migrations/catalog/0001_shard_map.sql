-- The architecture document's shard_map, plus the servers it names and a version.
CREATE TABLE shard_servers (
    name        varchar(100) PRIMARY KEY,
    host        text NOT NULL,
    port        integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shard_map (
    shard_key    varchar(10) PRIMARY KEY,
    shard_server varchar(100) NOT NULL REFERENCES shard_servers (name),
    version      bigint NOT NULL DEFAULT 1,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
