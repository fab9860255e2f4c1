"""A running AI job as its runner sees it: progress, the Ray tasks to cancel, and
whether it was cancelled (deployments/ai/service.py runs jobs; indexing.py too)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from ai.fanout import FanOut


class JobCancelled(Exception):
    pass


@dataclass
class JobRun:
    """One running job: its progress, and the Ray tasks to cancel when it is."""

    job_id: int
    total: int | None = None
    done: int = 0
    cancelled: bool = False
    refs: set[Any] = field(default_factory=set)
    fanouts: list[FanOut] = field(default_factory=list)

    def cancel(self) -> None:
        self.cancelled = True
        for ref in list(self.refs):
            ray.cancel(ref, force=False)
        for fanout in self.fanouts:
            fanout.cancel()

    def check(self) -> None:
        if self.cancelled:
            raise JobCancelled()
