-- Customers (accounts) and their contacts; a contact lives on its customer's shard
-- and its id carries the same logical shard.
CREATE TABLE customers (
    id            bigint PRIMARY KEY,
    name          text COLLATE "C" NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email         text,
    phone         text,
    website       text,
    industry      text,
    tags          text[] NOT NULL DEFAULT '{}',
    custom_fields jsonb NOT NULL DEFAULT '{}',
    owner_id      bigint,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE INDEX customers_by_created ON customers (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX customers_by_name ON customers (name, id) WHERE deleted_at IS NULL;
CREATE INDEX customers_by_lower_name ON customers ((lower(name)) text_pattern_ops)
    WHERE deleted_at IS NULL;
CREATE INDEX customers_by_owner ON customers (owner_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX customers_by_tags ON customers USING gin (tags) WHERE deleted_at IS NULL;

CREATE TABLE contacts (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    first_name  text COLLATE "C" NOT NULL CHECK (length(first_name) BETWEEN 1 AND 100),
    last_name   text COLLATE "C",
    email       text,
    phone       text,
    title       text,
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX contacts_by_customer ON contacts (customer_id, created_at, id) WHERE deleted_at IS NULL;
