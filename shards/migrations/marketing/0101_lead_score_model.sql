-- Which lead-scoring model wrote `score`, and when (deployments/ai batch scoring).
-- Numbered 0101+ so it never collides with the marketing service's own migrations.
ALTER TABLE leads ADD COLUMN score_model_version integer, ADD COLUMN scored_at timestamptz;
