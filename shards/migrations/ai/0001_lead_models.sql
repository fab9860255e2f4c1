-- Lead-scoring models (deployments/ai): every training run that finished, newest
-- version = published. The model is a pickled scikit-learn pipeline written only by
-- the AI service's own training task (never from user input).
CREATE TABLE lead_models (
    version     integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      bigint,
    algorithm   text NOT NULL,
    auc         double precision,
    n_train     integer NOT NULL,
    n_test      integer NOT NULL,
    positives   integer NOT NULL,
    features    jsonb NOT NULL DEFAULT '[]',
    model       bytea NOT NULL,
    created_by  bigint,
    created_at  timestamptz NOT NULL DEFAULT now()
);
