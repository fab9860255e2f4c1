-- Search that forgives (issue 26): a record is found by a prefix of a word ("nguy"
-- for "Nguyen") and by a word typed with one mistake ("nguyne"). `words` is the
-- document's words (all of them, folded as ai/search.py `tokens` folds them) as one
-- text, and its trigram index gives the candidates whose words are near a query word
-- (`<%`, word similarity); ai/search.py then keeps the real prefix and one-edit
-- matches and scores them below exact ones. pg_trgm is a trusted extension (no
-- superuser needed). Documents indexed before this have no `words` (and were folded
-- by the older tokenizer): the AI service re-indexes them (deployments/ai/indexing.py).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
ALTER TABLE search_documents ADD COLUMN words text;
CREATE INDEX search_documents_words ON search_documents USING gin (words gin_trgm_ops);
CREATE INDEX search_documents_unfolded ON search_documents (id) WHERE words IS NULL;
