"""Serve autoscaling on calls in progress rather than Serve requests in progress.

A deployment that takes micro-batched calls (`deployments._kit.boundary.BatchedCalls`)
sees one Serve request per batch, so Serve's default policy, which divides ongoing
requests by `target_ongoing_requests`, would under-count its load as much as the
batches are large. Such a deployment reports the time-weighted mean of its calls in
progress (`record_autoscaling_stats`), and `serve_config.yaml` names this policy:

    autoscaling_config:
      target_ongoing_requests: 64     # read as: calls in progress per replica
      policy:
        policy_function: cluster.autoscaling:calls_in_progress

Serve applies the rest of the config around it (bounds, delays, scaling factors).
"""

from __future__ import annotations

from typing import Any

from ray.serve.config import AutoscalingContext

CALLS_IN_PROGRESS = "calls_in_progress"


def calls_in_progress(ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
    """Replicas wanted: the calls in progress over every replica, divided by the
    target per replica; Serve's own measure (ongoing requests) when the replicas have
    not reported yet, or when it is the larger."""
    if ctx.config is None:
        return float(ctx.target_num_replicas), {}
    target = ctx.config.get_target_ongoing_requests()
    reported = (ctx.aggregated_metrics or {}).get(CALLS_IN_PROGRESS, {})
    load = max(sum(reported.values()), ctx.total_num_requests)
    return load / target, {}
