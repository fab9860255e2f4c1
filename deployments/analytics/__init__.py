"""Reports computed as Ray tasks per logical shard (see service.py)."""
