-- The search index of a shard's records (deployments/ai/indexing.py), kept beside them
-- in the same database. Filled in the customer database (customers, contacts) and
-- the support database (tickets); empty elsewhere. `id` is the record's own id, so
-- a row belongs to the record's logical shard and moves with it (SHARDED_TABLES).
--
-- terms:        the words of the fields every reader may see, each as often as it
--               occurs (BM25 needs term frequencies), matched with a GIN index;
-- email_terms,  the words of the e-mail address and of the phone number, apart
-- phone_terms:  because a role may hide those fields: they are searched only for
--               a caller who may see them;
-- embedding:    the record's sentence embedding (float32, little-endian, unit
--               length) by `model`, when the optional `ai` extra is installed;
-- source_updated_at: the record's updated_at when it was indexed: an older state
--               never overwrites a newer one.
CREATE TABLE search_documents (
    id                bigint PRIMARY KEY,
    record_type       text NOT NULL,
    title             text NOT NULL,
    terms             text[] NOT NULL,
    email_terms       text[] NOT NULL DEFAULT '{}',
    phone_terms       text[] NOT NULL DEFAULT '{}',
    length            integer NOT NULL,
    embedding         bytea,
    model             text,
    source_updated_at timestamptz NOT NULL,
    indexed_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX search_documents_terms ON search_documents USING gin (terms);
CREATE INDEX search_documents_email_terms ON search_documents USING gin (email_terms);
CREATE INDEX search_documents_phone_terms ON search_documents USING gin (phone_terms);
CREATE INDEX search_documents_by_shard ON search_documents (((id >> 12) & 1023), record_type);
-- Documents still waiting for their embedding (written by a bulk import's events, or
-- before the `ai` extra was installed): the embedding backlog reads them here.
CREATE INDEX search_documents_unembedded ON search_documents (id) WHERE embedding IS NULL;
