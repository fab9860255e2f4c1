-- Search that forgives (issue 26): a record is found by a prefix of a word ("nguy"
-- for "Nguyen") and by a word typed with one mistake ("nguyne"). `words` is the
-- document's words (all of them, folded as ai/search.py `tokens` folds them) as one
-- text, and its trigram index gives the candidates whose words are near a query word
-- (`<%`, word similarity), fuzzystrmatch's `levenshtein_less_equal` keeps those with
-- a word near enough, and ai/search.py then keeps the real prefix and one-edit
-- matches and scores them below exact ones. Both are trusted extensions (no
-- superuser needed). Documents indexed before this have no `words` (and were folded
-- by the older tokenizer): the AI service re-indexes them (deployments/ai/indexing.py).
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;
ALTER TABLE search_documents ADD COLUMN words text;
-- How many of `terms` (its first ones) are the title's: "the whole query is the name"
-- is then a comparison of a few words, not the title tokenized again per candidate.
ALTER TABLE search_documents ADD COLUMN title_words smallint;
CREATE INDEX search_documents_words ON search_documents USING gin (words gin_trgm_ops);
CREATE INDEX search_documents_unfolded ON search_documents (id) WHERE words IS NULL;
