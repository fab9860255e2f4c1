"""The import's CPU part as a Ray task: parsing, validating and encoding one chunk of a
CSV file (`csvio.parse_chunk`, a pure function) in a worker process of its own, so that
a large file is parsed by as many processes as the cluster lends the import, not by
the one IntegrationService replica (whose own process reads the file, removes rows
repeated across chunks and writes the batches)."""

from __future__ import annotations

from collections.abc import Sequence

import ray

from cluster.settings import get_settings
from deployments.integration import csvio


@ray.remote(max_retries=0)
def parse_import_chunk(
    lines: list[str],
    first_line: int,
    header: Sequence[str],
    caller_id: int,
    may_assign: bool,
    logical_shards: int,
) -> csvio.ParsedChunk:
    return csvio.parse_chunk(lines, first_line, header, caller_id, may_assign, logical_shards)


async def parse_in_task(
    lines: list[str],
    first_line: int,
    header: Sequence[str],
    caller_id: int,
    may_assign: bool,
    logical_shards: int,
) -> csvio.ParsedChunk:
    """`csvio.parse_chunk` in a Ray task (`import_task_num_cpus` of a CPU each)."""
    ref = parse_import_chunk.options(num_cpus=get_settings().import_task_num_cpus).remote(
        lines, first_line, header, caller_id, may_assign, logical_shards
    )
    return await ref


def parsers(configured: int | None) -> int:
    """How many chunks to parse at once in tasks (`import_parsers`, or from the
    cluster's CPUs when unset)."""
    if configured is not None:
        return configured
    cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
    return min(cpus // 2, 8) if cpus >= 4 else 0
