"""The gateway's own Prometheus series, exported through Ray's metrics endpoint (every
Ray node serves them; Prometheus finds the nodes through Ray's service-discovery
file). Ray prefixes the names with `ray_` (and counters get `_total`); Serve adds
`deployment`, `replica` and `application` labels.

Serve already counts requests per application (`ray_serve_num_http_requests_total`);
these add the route template, so one slow or failing endpoint stands out.
"""

from __future__ import annotations

from functools import cache

from ray.serve import metrics

# Milliseconds: a point read takes a few, a cross-shard page tens, an import hundreds.
LATENCY_MS = [1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]


# Made on first use, inside the replica: Serve's labels are only known there.
@cache
def _requests() -> metrics.Counter:
    return metrics.Counter(
        "nextflow_http_requests",
        description="HTTP requests answered by the gateway, by route template, method, status.",
        tag_keys=("route", "method", "status"),  # type: ignore[arg-type]  # Ray: Tuple[str]
    )


@cache
def _latency() -> metrics.Histogram:
    return metrics.Histogram(
        "nextflow_http_request_duration_ms",
        description="Time from the request reaching the gateway to its last response byte.",
        boundaries=LATENCY_MS,
        tag_keys=("route", "method"),  # type: ignore[arg-type]
    )


@cache
def _rate_limited() -> metrics.Counter:
    return metrics.Counter(
        "nextflow_rate_limited",
        description="Requests refused with 429 by a rate limiter, by limiter.",
        tag_keys=("limiter",),
    )


def request_done(route: str, method: str, status: int, ms: float) -> None:
    _requests().inc(tags={"route": route, "method": method, "status": str(status)})
    _latency().observe(ms, tags={"route": route, "method": method})


def rate_limited(limiter: str) -> None:
    _rate_limited().inc(tags={"limiter": limiter})
