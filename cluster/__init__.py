"""Settings, the local stack (PostgreSQL, Redis, Ray head) and the `nextflow` CLI."""
