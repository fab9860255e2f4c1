"""Ray tasks for AI and analytics work (the design card's `ai/`): what runs on the
workers that hold the custom resource `ai`, and the pure computations they run.

- `runtime.py`: task options (a CPU share and an `ai` share), where a task ran, reads
  through a ShardManager, and the generic per-shard read task;
- `fanout.py`: one task per logical shard or per shard server, re-planned when a
  shard moved, gathered;
- `tasks.py`: the AI tasks (training, batch scoring, indexing, search, summaries);
- `model.py` (lead scoring), `search.py` (BM25, nearest vectors, fusion),
  `embed.py` (the sentence-embedding model actor), `advice.py` (extractive summaries
  and next best actions).

The services that plan and reduce this work are `deployments/ai` and
`deployments/analytics`; the SQL the tasks run is in those services' `repo.py`."""
