-- The documents indexed since a moment, per kind: each shard server's in-memory
-- vector index (ai/vectors.py) reads only these before answering a semantic search.
CREATE INDEX search_documents_by_indexed_at ON search_documents (record_type, indexed_at);
