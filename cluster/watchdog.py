"""Automatic failover of the local stack's shard servers (issue 28).

`nextflow up` starts one detached Ray actor, `failover-watchdog`, unless
`failover_after_s` is 0. Every second it asks each shard server's primary for its
WAL position, on a connection of its own. A primary that has answered nothing for
`failover_after_s` (dead: the connection is refused; hung: the query times out) is
failed over exactly as `nextflow shards failover` does it (`LocalStack.failover`):
fenced (every process of a node that runs but does not answer is killed, and so
are backends a dead postmaster left behind; the old primary is marked demoted so
nothing starts it as a primary again),
its standby promoted, and the catalog pointed at the standby with every logical
shard of the server at a new map version, so a caller still on the old map is
refused. The server's ShardManager is told to re-read its addresses at once (the
writes resume), then the old primary is rebuilt as the new primary's standby by
pg_basebackup (retried every `_REBUILD_RETRY_S` until it works).

It does not act, and says why (`nextflow shards watchdog`, its log, the
`nextflow_shard_primary_unanswered_seconds` gauge): on the catalog (its address is
configuration); when the standby does not answer or is not a standby; with
asynchronous replicas, when the standby's received WAL is more than
`failover_max_lag_bytes` behind the primary's last position the watchdog saw, or
when it never saw one (what to lose is then a person's decision; the loss window
otherwise is what the primary wrote in its last second, docs/reliability.md; the
positions are kept in Redis too, for a watchdog restarted while a primary is down);
and while paused (`nextflow shards watchdog pause`, a Redis key, for maintenance).

On Kubernetes the PostgreSQL operator fails over (CloudNativePG): not started there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import ray
from ray.util import metrics

from cluster.procs import StackError
from cluster.redis_client import connect as redis_connect
from cluster.replication import CATALOG_SERVER, ServerNodes
from cluster.settings import Settings, get_settings
from cluster.stack import LocalStack
from shards.manager import NAMESPACE as MANAGERS
from shards.manager import actor_name

log = logging.getLogger(__name__)

NAME = "failover-watchdog"
NAMESPACE = "nextflow"
PAUSED_KEY = "nextflow:failover:paused"
POSITION_KEY = "nextflow:failover:lsn:{server}"  # a primary's last WAL position seen
_INTERVAL_S = 1.0
_PROBE_TIMEOUT_S = 2.0
_CATALOG_EVERY_S = 10.0
_REBUILD_RETRY_S = 30.0
_RETRY_S = 30.0
_HISTORY = 20

failovers = metrics.Counter(
    "nextflow_shard_failovers",
    description="Automatic failovers of a shard server, by outcome (promoted, failed).",
    tag_keys=("server", "outcome"),
)
unanswered = metrics.Gauge(
    "nextflow_shard_primary_unanswered_seconds",
    description="How long a shard server's primary has answered no watchdog probe (0: it answers).",
    tag_keys=("server",),
)
paused_gauge = metrics.Gauge(
    "nextflow_failover_watchdog_paused",
    description="1 while automatic failover is paused (nextflow shards watchdog pause).",
)


@dataclass(frozen=True)
class Standby:
    """What a standby said when a failover was considered."""

    answers: bool
    in_recovery: bool = False
    behind_bytes: int | None = None  # received WAL behind the primary's last position seen
    error: str = ""  # why it did not answer


def reason_not_to_fail_over(
    unanswered_s: float,
    after_s: float,
    standby: Standby,
    *,
    synchronous: bool,
    max_lag_bytes: int,
    paused: bool,
) -> str | None:
    """None: fail over now. Else why not (yet), in words for an operator."""
    if unanswered_s < after_s:
        return f"primary silent for {unanswered_s:.1f}s of {after_s:g}s"
    if not standby.answers:
        return f"its standby does not answer either ({standby.error}): nothing to promote"
    if not standby.in_recovery:
        return "its standby is not in recovery (not a standby): nothing to promote"
    if not synchronous:
        if standby.behind_bytes is None:
            return "the primary's last position is unknown: cannot bound what would be lost"
        if standby.behind_bytes > max_lag_bytes:
            return (
                f"its standby is {standby.behind_bytes} bytes behind the primary's last "
                f"position seen (more than {max_lag_bytes}): `nextflow shards failover` "
                "decides"
            )
    if paused:
        return "paused (`nextflow shards watchdog resume`)"
    return None


@dataclass
class Watch:
    """One shard server as the watchdog sees it."""

    server: str
    primary: str  # the node the catalog names primary
    silent_since: float | None = None  # first probe without an answer; None: answering
    last_lsn: str | None = None  # the primary's WAL position at its last answer
    note: str = "watching"
    rebuild_at: float | None = None  # when to (re)try rebuilding its standby
    retry_at: float = 0.0  # after a failed failover: not again before this


@dataclass
class _State:
    watches: dict[str, Watch] = field(default_factory=dict)
    groups: dict[str, ServerNodes] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    paused: bool = False
    read_at: float = 0.0


class FailoverWatchdog:
    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]
        self._settings = settings
        self._stack = LocalStack(settings)
        self._redis = redis_connect(settings.redis_url)
        self._conns: dict[tuple[str, int], asyncpg.Connection] = {}
        self._state = _State()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    # -- what an operator asks -------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        now = time.monotonic()
        s = self._state
        s.paused = await self._paused()
        return {
            "after_s": self._settings.failover_after_s,
            "paused": s.paused,
            "synchronous_replicas": self._settings.synchronous_replicas,
            "servers": [
                {
                    "server": w.server,
                    "primary": w.primary,
                    "unanswered_s": 0.0 if w.silent_since is None else now - w.silent_since,
                    "note": w.note,
                    "rebuild_pending": w.rebuild_at is not None,
                }
                for w in sorted(s.watches.values(), key=lambda w: w.server)
            ],
            "failovers": list(s.history),
        }

    # -- the loop ----------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception:  # one bad round (catalog away, ...) must not end the watch
                log.exception("failover watchdog: round failed")
            await asyncio.sleep(_INTERVAL_S)

    async def _tick(self) -> None:
        s = self._state
        if time.monotonic() - s.read_at >= _CATALOG_EVERY_S:
            await self._read_catalog()
        s.paused = await self._paused()
        paused_gauge.set(1 if s.paused else 0)
        groups = list(s.groups.values())
        answers = await asyncio.gather(*(self._probe(g) for g in groups))
        await self._keep_positions(groups, answers)
        for group, lsn in zip(groups, answers, strict=True):
            watch = s.watches[group.server]
            now = time.monotonic()
            if lsn is not None:
                watch.silent_since, watch.note = None, "watching"
                if lsn:
                    watch.last_lsn = lsn
                unanswered.set(0, tags={"server": group.server})
            else:
                watch.silent_since = watch.silent_since or now
                silent = now - watch.silent_since
                unanswered.set(silent, tags={"server": group.server})
                due = silent >= self._settings.failover_after_s
                standby = await self._standby(group.standby, watch.last_lsn) if due else None
                why = reason_not_to_fail_over(
                    silent, self._settings.failover_after_s, standby or Standby(answers=False),
                    synchronous=self._settings.synchronous_replicas,
                    max_lag_bytes=self._settings.failover_max_lag_bytes, paused=s.paused,
                )  # fmt: skip
                if why is None and now < watch.retry_at:
                    pass  # the last attempt failed: its note stands until the retry
                elif why is None:
                    await self._fail_over(group, watch, silent)
                else:
                    if due and why != watch.note:
                        log.warning("%s: primary %s down, not failing over: %s",
                                    group.server, watch.primary, why)  # fmt: skip
                    watch.note = why
            if watch.rebuild_at is not None and now >= watch.rebuild_at and not s.paused:
                await self._rebuild(group.server, watch)

    async def _keep_positions(self, groups: list[ServerNodes], answers: list[str | None]) -> None:
        """The primaries' positions seen, also in Redis: a watchdog restarted while a
        primary is down still knows how far it had written."""
        s = self._state
        seen = {}
        for group, lsn in zip(groups, answers, strict=True):
            watch = s.watches[group.server]
            if lsn and lsn != watch.last_lsn:
                seen[POSITION_KEY.format(server=group.server)] = lsn
            elif lsn is None and watch.last_lsn is None:  # down since before we started
                try:
                    known = await self._redis.get(POSITION_KEY.format(server=group.server))
                except Exception:  # Redis away: it stays unknown
                    known = None
                if isinstance(known, bytes):
                    known = known.decode()
                watch.last_lsn = known or None
        if seen:
            try:
                await self._redis.mset(seen)
            except Exception as exc:  # Redis away: kept in memory only
                log.warning("failover watchdog: cannot keep positions in Redis: %r", exc)

    async def _paused(self) -> bool:
        try:
            return bool(await self._redis.exists(PAUSED_KEY))
        except Exception as exc:  # Redis away: keep what was last known
            log.warning("failover watchdog: cannot read %s: %r", PAUSED_KEY, exc)
            return self._state.paused

    async def _read_catalog(self) -> None:
        s = self._state
        s.read_at = time.monotonic()  # also after a failure: again in _CATALOG_EVERY_S
        try:
            view = await asyncio.to_thread(self._stack.read_catalog)
            if view is None:
                return
            nodes = await asyncio.to_thread(self._stack.server_nodes, view)
        except (StackError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The catalog away, or an address that is no node of this stack.
            log.warning("failover watchdog: keeping the last topology: %s", exc)
            return
        s.groups = {g.server: g for g in nodes if g.server != CATALOG_SERVER}
        for group in s.groups.values():
            watch = s.watches.get(group.server)
            if watch is None or watch.primary != group.primary.name:  # new, or failed over
                pending = watch.rebuild_at if watch is not None else None
                s.watches[group.server] = Watch(group.server, group.primary.name)
                s.watches[group.server].rebuild_at = pending
        for gone in set(s.watches) - set(s.groups):
            del s.watches[gone]

    async def _probe(self, group: ServerNodes) -> str | None:
        """The primary's WAL position ('' when it answers but is in recovery); None when
        it did not answer within the probe timeout."""
        node = group.primary
        key = (node.host, node.port)
        try:
            conn = self._conns.get(key)
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(
                    self._settings.dsn_for(node.host, node.port, "postgres"),
                    timeout=_PROBE_TIMEOUT_S,
                )
                self._conns[key] = conn
            answer = await asyncio.wait_for(
                conn.fetchval(
                    "SELECT CASE WHEN pg_is_in_recovery() THEN ''"
                    " ELSE pg_current_wal_lsn()::text END"
                ),
                _PROBE_TIMEOUT_S,
            )
            return str(answer)
        except Exception:  # refused, timed out, closed under it: no answer
            dropped = self._conns.pop(key, None)
            if dropped is not None:
                dropped.terminate()
            return None

    async def _standby(self, node: Any, last_lsn: str | None) -> Standby:
        try:
            conn = await asyncpg.connect(
                self._settings.dsn_for(node.host, node.port, "postgres"),
                timeout=_PROBE_TIMEOUT_S,
                command_timeout=_PROBE_TIMEOUT_S,
            )
        except Exception as exc:  # refused, timed out, starting up: no answer
            return Standby(answers=False, error=_gist(exc))
        try:
            row = await conn.fetchrow(
                "SELECT pg_is_in_recovery() AS in_recovery, pg_wal_lsn_diff($1::text::pg_lsn,"
                " coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()))::bigint AS behind",
                last_lsn,
            )
        except Exception as exc:
            return Standby(answers=False, error=_gist(exc))
        finally:
            conn.terminate()
        assert row is not None
        behind = row["behind"]
        return Standby(True, bool(row["in_recovery"]), None if behind is None else max(0, behind))

    # -- acting ------------------------------------------------------------------------

    async def _fail_over(self, group: ServerNodes, watch: Watch, silent: float) -> None:
        server = group.server
        log.warning("%s: primary %s silent for %.1fs: failing over to %s",
                    server, group.primary.name, silent, group.standby.name)  # fmt: skip
        began = time.monotonic()
        try:
            result = await asyncio.to_thread(self._stack.failover, server)
        except Exception as exc:  # refused by the command's own checks, or it broke
            failovers.inc(tags={"server": server, "outcome": "failed"})
            log.error("%s: automatic failover failed: %s", server, exc)
            watch.note = f"failover failed (retrying in {_RETRY_S:.0f}s): {exc}"
            watch.retry_at = time.monotonic() + _RETRY_S
            self._remember(server, group.primary.name, None, silent, began, str(exc))
            self._state.read_at = 0.0
            return
        failovers.inc(tags={"server": server, "outcome": "promoted"})
        refreshed = await self._refresh_manager(server)
        log.warning("%s: failed over to %s (%s) in %.1fs after %.1fs of silence; %s", server,
                    result.new_primary, result.new_address, time.monotonic() - began, silent,
                    refreshed)  # fmt: skip
        self._remember(server, result.old_primary, result.new_primary, silent, began, None)
        self._drop_connection(group.primary)
        await self._read_catalog()
        self._state.watches[server].rebuild_at = time.monotonic()

    def _remember(
        self, server: str, old: str, new: str | None, silent: float, began: float, error: str | None
    ) -> None:
        history = self._state.history
        history.append({
            "server": server, "old_primary": old, "new_primary": new,
            "silent_s": round(silent, 1), "took_s": round(time.monotonic() - began, 1),
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "error": error, "standby": None,
        })  # fmt: skip
        del history[:-_HISTORY]

    async def _refresh_manager(self, server: str) -> str:
        try:
            manager = ray.get_actor(actor_name(server), namespace=MANAGERS)
        except ValueError:
            return "no ShardManager yet (it reads the catalog when it starts)"
        try:
            await asyncio.wait_for(manager.refresh.remote(), 30)
        except Exception as exc:  # it finds out by itself at its next poll
            return f"ShardManager refresh failed: {exc!r}"
        return "ShardManager refreshed"

    async def _rebuild(self, server: str, watch: Watch) -> None:
        try:
            line = await asyncio.to_thread(self._stack.rebuild_standby, server)
        except Exception as exc:  # e.g. the new primary busy: try again later
            log.error("%s: rebuilding its standby failed (retrying in %.0fs): %s",
                      server, _REBUILD_RETRY_S, exc)  # fmt: skip
            watch.rebuild_at = time.monotonic() + _REBUILD_RETRY_S
            watch.note = f"standby rebuild failed, retrying: {exc}"
            return
        watch.rebuild_at = None
        log.warning("%s: standby rebuilt: %s; %s", server, line,
                    await self._refresh_manager(server))  # fmt: skip
        for entry in reversed(self._state.history):
            if entry["server"] == server and entry["standby"] is None:
                entry["standby"] = line
                break
        self._state.read_at = 0.0

    def _drop_connection(self, node: Any) -> None:
        conn = self._conns.pop((node.host, node.port), None)
        if conn is not None:
            conn.terminate()


def _gist(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


WatchdogActor = ray.remote(FailoverWatchdog)


def ensure(settings: Settings) -> str:
    """Start the watchdog actor unless it runs (`python -m cluster.watchdog`, with
    RAY_AUTH_MODE=token, from LocalStack.start_watchdog); what it does, as one line."""
    ray.init(address=settings.ray_address, namespace=NAMESPACE, log_to_driver=False,
             logging_level=logging.ERROR)  # fmt: skip
    try:
        actor: Any = WatchdogActor.options(
            name=NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            max_restarts=-1, max_task_retries=0, num_cpus=0,
        ).remote(settings)  # fmt: skip
        state: dict[str, Any] = ray.get(actor.status.remote(), timeout=60)
    finally:
        ray.shutdown()
    mode = "paused" if state["paused"] else "on"
    return (
        f"failover watchdog: {mode}, a shard primary silent for {state['after_s']:g}s is "
        "failed over (`nextflow shards watchdog`)"
    )


if __name__ == "__main__":
    print(ensure(get_settings()))
