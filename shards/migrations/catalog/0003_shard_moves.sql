-- Online moves of one logical shard between servers (`nextflow shards move`).
-- At most one unfinished move per logical shard.
CREATE TABLE shard_moves (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shard_key   varchar(10) NOT NULL REFERENCES shard_map (shard_key),
    source      varchar(100) NOT NULL REFERENCES shard_servers (name),
    target      varchar(100) NOT NULL REFERENCES shard_servers (name),
    state       text NOT NULL CHECK (state IN
                    ('copying', 'catching_up', 'frozen', 'switched', 'done', 'failed')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    detail      text NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX shard_moves_one_per_shard ON shard_moves (shard_key)
    WHERE state NOT IN ('done', 'failed');
