"""The gateway's side of micro-batching a Serve hop: concurrent requests' calls of a
deployment's short methods leave as one `call_batch` Serve request
(`deployments._kit.boundary.BatchedCalls`), through `cluster.batching.Batcher`.

    customers = BatchedHandle(handle, CustomerDeployment.BATCHED, in_flight=4)
    found = await customers.get.remote(principal, customer_id)   # as with the handle

Methods not named in `methods` (lists, exports, long jobs) go straight to the handle:
a batch answers when its slowest call is done.
"""

from __future__ import annotations

from collections.abc import Collection, Coroutine
from typing import Any

from cluster import logs
from cluster.batching import Batcher, Outcome
from deployments._kit.boundary import ServiceCall


class BatchedHandle:
    """A `DeploymentHandle` whose `methods` are coalesced; everything else passes through."""

    def __init__(
        self, handle: Any, methods: Collection[str], *, in_flight: int, max_batch: int = 64
    ) -> None:
        self.handle = handle
        self.batcher: Batcher[ServiceCall] = Batcher(
            self._send,
            target=getattr(handle, "deployment_name", "deployment"),
            max_in_flight=in_flight,
            max_batch=max_batch,
        )
        self._methods = {name: _BatchedMethod(self.batcher, name) for name in methods}

    async def _send(self, calls: list[ServiceCall]) -> list[Outcome]:
        outcomes: list[Outcome] = await self.handle.call_batch.remote(calls)
        return outcomes

    def __getattr__(self, name: str) -> Any:
        method = self._methods.get(name)
        return method if method is not None else getattr(self.handle, name)


class _BatchedMethod:
    def __init__(self, batcher: Batcher[ServiceCall], name: str) -> None:
        self._batcher = batcher
        self._name = name

    def remote(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        call = ServiceCall(self._name, args, kwargs, logs.request_id())
        return self._batcher.call(call)
