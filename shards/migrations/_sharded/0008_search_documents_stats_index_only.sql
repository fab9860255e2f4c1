-- Every lexical search reads its corpus statistics (documents and their total length
-- per kind on a server's logical shards: deployments/ai/repo.py `lexical_matches`).
-- With `length` and `id` in the index that read is an index-only scan: measured on
-- 60,000 documents, 1.7 ms against 17 ms for the scan of the table (with its
-- embeddings) the old index left the planner. (`id` too: PostgreSQL answers from an
-- expression index alone only when the columns under the expression are in it.)
CREATE INDEX search_documents_by_shard_with_length
    ON search_documents (((id >> 12) & 1023), record_type) INCLUDE (length, id);
DROP INDEX search_documents_by_shard;
