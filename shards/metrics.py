"""The shard managers' Prometheus series (Ray's metrics endpoint adds the `ray_`
prefix, and `_total` to counters). Labels stay bounded: servers, databases and
replicas, never shard keys or record ids.
"""

from __future__ import annotations

from ray.util import metrics

LATENCY_MS = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 30000]

queries = metrics.Histogram(
    "nextflow_shard_query_duration_ms",
    description="One repo function run in one transaction on a shard server node.",
    boundaries=LATENCY_MS,
    tag_keys=("server", "database", "role", "kind"),
)
query_errors = metrics.Counter(
    "nextflow_shard_query_errors",
    description="Failed transactions: `unavailable` (node unreachable) or the SQLSTATE.",
    tag_keys=("server", "database", "role", "error"),
)
pool_connections = metrics.Gauge(
    "nextflow_pool_connections",
    description="asyncpg pool connections per node and database, `state` = open or in_use.",
    tag_keys=("server", "node", "database", "state"),
)
replica_lag = metrics.Gauge(
    "nextflow_replica_lag_seconds",
    description="How far a streaming replica's replay is behind its primary.",
    tag_keys=("server", "replica"),
)
replica_usable = metrics.Gauge(
    "nextflow_replica_usable",
    description="1 when the replica streams and is within the lag bound, else 0.",
    tag_keys=("server", "replica"),
)
manager_up = metrics.Gauge(
    "nextflow_shard_manager_up",
    description="1 while the server's ShardManager runs and reaches its primary.",
    tag_keys=("server",),
)
