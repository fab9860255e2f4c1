-- Streaming replicas of each server. `shard_servers` names the current primary;
-- after a failover the promoted replica's address moves there.
CREATE TABLE shard_replicas (
    name        varchar(100) PRIMARY KEY,
    server      varchar(100) NOT NULL REFERENCES shard_servers (name),
    host        text NOT NULL,
    port        integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shard_replicas_by_server ON shard_replicas (server);
