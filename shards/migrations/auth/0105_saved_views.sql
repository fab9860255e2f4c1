-- Saved views (issue 25): a user's named list view of an object (its filters, sort
-- and visible columns), used by `GET /v1/<list>?view=<id>`; `shared` shows it to the
-- members of its owner's team. `filters` are the list's query parameters as
-- [name, value] pairs, exactly as the query string spells them.
CREATE TABLE saved_views (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id   bigint NOT NULL REFERENCES users (id),
    object     text NOT NULL,
    name       text NOT NULL,
    filters    jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(filters) = 'array'),
    sort       text,
    columns    text[] NOT NULL DEFAULT '{}',
    shared     boolean NOT NULL DEFAULT false,
    version    integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX saved_views_by_name ON saved_views (owner_id, object, lower(name));
CREATE INDEX saved_views_shared ON saved_views (object, owner_id) WHERE shared;
