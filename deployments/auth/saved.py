"""Saved views as every list route reads them (`?view=<id>`, gateway/context.py): the
auth database once per view and `VIEW_CACHE_TTL_S`, not once per request. A changed
or deleted view takes effect within that time in the other replicas (at once in the
auth replica that changed it, which forgets it)."""

from __future__ import annotations

import time
from collections import OrderedDict

from deployments.auth import repo
from gateway.listing import SavedQuery
from shards.client import Database

VIEW_CACHE_TTL_S = 5.0
_MAX_CACHED = 10_000


class ViewCache:
    def __init__(self, db: Database, ttl_s: float = VIEW_CACHE_TTL_S) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._known: OrderedDict[int, tuple[float, SavedQuery | None]] = OrderedDict()

    async def get(self, view_id: int) -> SavedQuery | None:
        now = time.monotonic()
        cached = self._known.get(view_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await self._db.read(repo.saved_query, view_id)
        self._known[view_id] = (now + self._ttl_s, found)
        self._known.move_to_end(view_id)
        while len(self._known) > _MAX_CACHED:
            self._known.popitem(last=False)
        return found

    def forget(self, view_id: int) -> None:
        self._known.pop(view_id, None)
