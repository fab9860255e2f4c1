"""The import's CPU part as a Ray task: parsing, validating and encoding one chunk of a
CSV file (`csvio.parse_chunk`, a pure function) in a worker process of its own, so that
a large file is parsed by as many processes as the cluster lends the import, not by
the one IntegrationService replica (whose own process reads the file, removes rows
repeated across chunks and writes the batches)."""

from __future__ import annotations

from typing import Any

import ray

from cluster.settings import get_settings
from deployments.integration import csvio

# The task (named `...csvio.parse_chunk` in the dashboard); a failed parse is not retried:
# the job fails with its error.
_parse_chunk = ray.remote(max_retries=0)(csvio.parse_chunk)


async def parse_in_task(*args: Any) -> csvio.ParsedChunk:
    """`csvio.parse_chunk(*args)` in a Ray task (`import_task_num_cpus` of a CPU)."""
    cpus = get_settings().import_task_num_cpus
    chunk: csvio.ParsedChunk = await _parse_chunk.options(num_cpus=cpus).remote(*args)
    return chunk


def parsers(configured: int | None) -> int:
    """How many chunks to parse at once in tasks (`import_parsers`, or from the
    cluster's CPUs when unset)."""
    if configured is not None:
        return configured
    cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
    return min(cpus // 2, 8) if cpus >= 4 else 0
