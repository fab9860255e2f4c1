"""AI logic: lead-scoring training, batch scoring and search-index rebuilds as jobs
of Ray tasks, online scoring of one lead, search (the index: indexing.py), ticket
summaries (extractive, or a chat model: chat.py) and next best actions. No SQL here
(repo.py), no Serve (app.py); the tasks and what they compute are in `ai/`.

Jobs use the shared `jobs` table (database `integration`), so
`GET /v1/integration/jobs/{id}` and `POST /v1/integration/jobs/{id}/cancel` work for
them as for imports. The replica that runs a job renews its row every `HEARTBEAT_S`
with the progress; a cancel (the row turns
`cancelled`) is seen within that time and cancels the job's Ray tasks still queued
or running (`ray.cancel`). A job whose replica died stops being renewed, and any AI
replica takes it over after `ABANDONED_AFTER_S` and runs it again from the start
(training, scoring and indexing are all safe to repeat).

Online scoring: each replica keeps the newest model loaded; the version published
last is in Redis (`MODEL_KEY`), read on every call, and a different version is
loaded (in a worker thread) before scoring."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import ray
import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from ai import model as lead_model
from ai.advice import Action, deal_actions, ticket_actions
from ai.fanout import FanOut, cause
from ai.runtime import shard_reads, task_options
from ai.search import tokens as search_tokens
from ai.tasks import score_batch, summarize, train_leads
from deployments._kit import bulk
from deployments._kit.types import Id
from deployments.ai import repo
from deployments.ai.chat import ChatModel, ChatUnavailable
from deployments.ai.indexing import MODES, SearchIndex
from deployments.ai.repo import ModelRead
from deployments.ai.runs import JobCancelled, JobRun
from deployments.integration import repo as jobs_repo
from deployments.integration.repo import JobAccepted
from gateway.errors import Conflict, Forbidden, NotFound, Validation
from gateway.principal import Principal
from shards import ShardNotFound
from shards.client import Database, Shards
from shards.errors import StaleShardMap

log = logging.getLogger("nextflow.ai")
KIND_TRAIN = "ai.train_lead_model"
KIND_SCORE = "ai.score_leads"
KIND_INDEX = "ai.search_index"
MODEL_KEY = "nextflow:ai:lead_model_version"
HEARTBEAT_S = 1.0
ABANDONED_AFTER_S = 15.0


SEARCH_KINDS = ("customer", "contact", "ticket")
_SEARCH_PERMISSION = {
    "customer": "customer:read",
    "contact": "customer:read",
    "ticket": "ticket:read",
}


class SearchHit(BaseModel):
    type: str
    id: Id
    title: str
    score: float
    exact: bool = Field(
        default=False,
        description="The whole query is the record's name, e-mail address or phone number"
        " (such records come first).",
    )


class SearchResult(BaseModel):
    query: str
    types: list[str]
    mode: str = Field(description="hybrid, semantic or lexical: how `data` was ranked")
    data: list[SearchHit]


class TicketSummary(BaseModel):
    ticket_id: Id
    method: str = Field(default="extractive", description="extractive, or chat (a model)")
    model: str | None = Field(default=None, description="the chat model, for `chat`")
    summary: str
    sentences: list[dict[str, str]] = Field(description="the sentences chosen (extractive)")
    note: str | None = Field(
        default=None, description="why a configured chat model was not used this time"
    )


class NextActions(BaseModel):
    record_type: str
    record_id: Id
    score: float | None = None
    actions: list[Action]


class LeadScore(BaseModel):
    lead_id: Id
    score: float
    model_version: int


class AIService:
    def __init__(
        self,
        leads: Shards,
        models: Database,
        jobs: Database,
        redis: aioredis.Redis,
        batch_size: int,
        in_flight: int,
        support: Any = None,
        sales: Any = None,
        index_batch_size: int = 500,
        chat: ChatModel | None = None,
    ) -> None:
        """`support`, `sales`: those services' deployment handles (summaries and next
        best actions read tickets and deals through them, with their permissions)."""
        self.support = support
        self.sales = sales
        self.leads = leads
        self.models = models
        self.jobs = jobs
        self.redis = redis
        self.batch_size = batch_size
        self.in_flight = in_flight
        self._loaded: tuple[int, Any] | None = None
        self._load_lock = asyncio.Lock()
        self._runs: dict[int, asyncio.Task[None]] = {}
        self.index = SearchIndex(
            leads, index_batch_size, in_flight, redis, self.bulk_writes_running
        )
        self.chat = chat

    async def bulk_writes_running(self) -> bool:
        """Whether an import is under way (the search backlog waits for it)."""
        return await self.jobs.read_primary(
            bulk.bulk_writes_running, bulk.BULK_WRITE_KINDS, bulk.BULK_WRITE_ALIVE_S
        )

    # -- jobs -------------------------------------------------------------------------
    async def start_training(self, principal: Principal) -> JobAccepted:
        principal.require("ai:train")
        return await self._start(KIND_TRAIN, principal.user_id)

    async def start_scoring(self, principal: Principal) -> JobAccepted:
        principal.require("ai:train")
        if await self.models.read(repo.list_models, 1) == []:
            raise Conflict("no lead model yet: train one first (POST /v1/ai/lead-scoring/train)")
        return await self._start(KIND_SCORE, principal.user_id)

    async def start_reindex(self, principal: Principal) -> JobAccepted:
        """Rebuild the search index of every customer, contact and ticket (a job)."""
        principal.require("ai:train")
        return await self._start(KIND_INDEX, principal.user_id)

    async def _start(self, kind: str, user_id: int) -> JobAccepted:
        job = await self.jobs.write(jobs_repo.create_job, kind, user_id)
        if not await self.jobs.write(jobs_repo.start_job, job.id, 0):
            raise Conflict(f"job {job.id} was cancelled before it started")
        self._launch(job.id, kind, user_id)
        return JobAccepted(job_id=job.id, status_url=f"/v1/integration/jobs/{job.id}")

    def _launch(self, job_id: int, kind: str, user_id: int) -> None:
        work: Callable[[JobRun], Awaitable[dict[str, Any]]]
        if kind == KIND_TRAIN:

            async def work(run: JobRun) -> dict[str, Any]:
                return await self._train(run, user_id)
        elif kind == KIND_INDEX:
            work = self.index.rebuild
        else:
            work = self._score_all
        task = asyncio.get_running_loop().create_task(self._run(job_id, work))
        self._runs[job_id] = task
        task.add_done_callback(lambda _t: self._runs.pop(job_id, None))

    async def take_over_abandoned(self) -> list[int]:
        """Run again the AI jobs a dead replica left behind; their ids."""
        taken = await self.jobs.write(
            repo.claim_abandoned, [KIND_TRAIN, KIND_SCORE, KIND_INDEX], ABANDONED_AFTER_S
        )
        for row in taken:
            if int(row["id"]) in self._runs:  # ours, and still running: just slow to renew
                continue
            log.warning("taking over abandoned job %s (%s)", row["id"], row["kind"])
            self._launch(int(row["id"]), str(row["kind"]), int(row["created_by"]))
        return [int(r["id"]) for r in taken]

    async def _run(self, job_id: int, work: Callable[[JobRun], Awaitable[dict[str, Any]]]) -> None:
        run = JobRun(job_id)
        beating = asyncio.get_running_loop().create_task(self._heartbeat(run))
        try:
            result = await work(run)
            # The final progress (a job shorter than a heartbeat has reported none).
            await self.jobs.write(repo.heartbeat, job_id, run.done, run.total)
            await self.jobs.write(jobs_repo.finish_job, job_id, "succeeded", run.done, result, None)
        except (JobCancelled, asyncio.CancelledError):
            run.cancel()
            await self.jobs.write(jobs_repo.finish_job, job_id, "cancelled", run.done, None, None)
        except Exception as exc:
            if run.cancelled:  # a cancelled task's error, after the cancel
                await self.jobs.write(
                    jobs_repo.finish_job, job_id, "cancelled", run.done, None, None
                )
                return
            run.cancel()
            error = cause(exc)
            log.exception("job %s failed", job_id)
            message = str(error) if isinstance(error, ValueError) else type(error).__name__
            await self.jobs.write(jobs_repo.finish_job, job_id, "failed", run.done, None, message)
        finally:
            beating.cancel()

    async def _heartbeat(self, run: JobRun) -> None:
        """Renew the job's row with its progress; cancel the run once it is cancelled."""
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                alive = await self.jobs.write(repo.heartbeat, run.job_id, run.done, run.total)
            except Exception as exc:  # a blip: try again next beat
                log.warning("job %s heartbeat failed: %s", run.job_id, exc)
                continue
            if not alive:
                status = await self.jobs.read_primary(repo.job_status, run.job_id)
                if status == "cancelled":
                    run.cancel()
                return

    # -- training ---------------------------------------------------------------------
    async def _train(self, run: JobRun, user_id: int) -> dict[str, Any]:
        seen = self.leads.map
        shards = list(range(seen.logical_shards))
        run.total = len(shards) + 1
        reads = [
            shard_reads.options(**task_options()).remote(
                seen.server_for_shard(s), seen.route([s]),
                [("marketing", repo.training_rows, (s,))],
            )
            for s in shards
        ]  # fmt: skip
        fit = train_leads.options(**task_options()).remote(*reads)
        run.refs.update([*reads, fit])
        for ref in reads:
            await ref
            run.done += 1
            run.check()
        trained, runtime = await fit
        run.done += 1
        run.check()
        stored = await self.models.write(
            repo.store_model, run.job_id, lead_model.ALGORITHM, trained.auc,
            (trained.n_train, trained.n_test, trained.positives), trained.features,
            trained.model, user_id,
        )  # fmt: skip
        await self.redis.set(MODEL_KEY, stored.version)
        return {
            "model_version": stored.version,
            "auc": trained.auc,
            "n_train": trained.n_train,
            "n_test": trained.n_test,
            "positives": trained.positives,
            "task": runtime.model_dump(),
        }

    # -- batch scoring ----------------------------------------------------------------
    async def _score_all(self, run: JobRun) -> dict[str, Any]:
        latest = await self.models.read(repo.latest_model)
        if latest is None:
            raise ValueError("no lead model to score with")
        meta, model_bytes = latest
        fanout = FanOut(self.leads)
        run.fanouts.append(fanout)
        planned = await fanout.each_shard(lambda s: [("marketing", repo.open_lead_ids, (s,))])
        batches = [
            (r.shard, r.values[0][i : i + self.batch_size])
            for r in planned
            for i in range(0, len(r.values[0]), self.batch_size)
        ]
        run.total = sum(len(ids) for _, ids in batches)
        run.check()
        model_ref = ray.put(model_bytes)
        pending: dict[asyncio.Future[Any], tuple[Any, int, list[int], int]] = {}
        scored = 0
        tasks = 0

        def submit(shard: int, ids: list[int], attempt: int) -> None:
            seen = self.leads.map
            ref = score_batch.options(**task_options()).remote(
                seen.server_for_shard(shard), seen.route([shard]), shard, ids, model_ref,
                meta.version,
            )  # fmt: skip
            pending[asyncio.ensure_future(ref)] = (ref, shard, ids, attempt)
            run.refs.add(ref)

        queue = list(reversed(batches))
        try:
            while queue or pending:
                run.check()
                while queue and len(pending) < self.in_flight:
                    shard, ids = queue.pop()
                    submit(shard, ids, 1)
                ready, _ = await asyncio.wait(
                    list(pending), timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED
                )
                for fut in ready:
                    ref, shard, ids, attempt = pending.pop(fut)
                    run.refs.discard(ref)
                    exc = fut.exception()
                    if exc is not None:
                        if attempt == 1 and not run.cancelled:
                            # Scoring a batch again is harmless: once more, after
                            # re-reading the map in case the shard moved.
                            log.warning("job %s: batch on shard %d failed (%s), retrying",
                                        run.job_id, shard, type(cause(exc)).__name__)  # fmt: skip
                            if isinstance(cause(exc), StaleShardMap):
                                await self.leads.reload()
                            submit(shard, ids, 2)
                            continue
                        raise exc
                    written, _runtime = fut.result()
                    scored += written
                    tasks += 1
                    run.done += len(ids)
        finally:
            for fut in pending:
                fut.cancel()
        return {"model_version": meta.version, "scored": scored, "tasks": tasks}

    # -- models and online scoring ----------------------------------------------------
    async def list_models(self, principal: Principal, limit: int = 20) -> list[ModelRead]:
        principal.require("lead:read")
        return await self.models.read(repo.list_models, limit)

    async def _model(self) -> tuple[int, Any]:
        published = await self.redis.get(MODEL_KEY)
        loaded = self._loaded
        if loaded is not None and published is not None and int(published) == loaded[0]:
            return loaded
        async with self._load_lock:
            latest = await self.models.read(repo.latest_model)
            if latest is None:
                raise Conflict("no lead model yet: train one first")
            meta, model_bytes = latest
            if self._loaded is None or self._loaded[0] != meta.version:
                try:
                    fitted = lead_model.load(model_bytes)
                except lead_model.UnreadableModel as exc:
                    raise Conflict(f"{exc}; train a new one") from None
                self._loaded = (meta.version, fitted)
                log.info("loaded lead model version %d", meta.version)
            return self._loaded

    @property
    def loaded_version(self) -> int | None:
        return None if self._loaded is None else self._loaded[0]

    async def loaded_model_version(self) -> int | None:
        """The model version this replica has loaded (tests, debugging)."""
        return self.loaded_version

    async def embed_backlog(self) -> int:
        """One round of the search backlog now (operators, tests): how many records
        it worked on (0: nothing waits, or an import runs)."""
        return await self.index.embed_backlog()

    async def score_lead(self, principal: Principal, lead_id: int) -> LeadScore:
        principal.require("lead:read")
        try:
            shard = self.leads.shard_for_id(lead_id)
        except ShardNotFound:
            raise NotFound(f"lead {lead_id} not found") from None
        reach = principal.owners("lead:read")
        owners = None if reach is None else sorted(reach)
        rows = await self.leads.read(shard, repo.leads_by_id, shard, [lead_id], owners)
        if not rows:
            raise NotFound(f"lead {lead_id} not found")
        version, fitted = await self._model()
        (value,) = await asyncio.to_thread(lead_model.score, fitted, rows)
        return LeadScore(lead_id=lead_id, score=value, model_version=version)

    # -- search -----------------------------------------------------------------------
    async def search(
        self,
        principal: Principal,
        query: str,
        types: list[str] | None,
        limit: int,
        mode: str | None = None,
        near: bool = True,
    ) -> SearchResult:
        """Customers, contacts and tickets matching `query` best, from the stored search
        index on every logical shard (deployments/ai/indexing.py). `mode`: hybrid
        (the default when embeddings are on), semantic, or lexical (the default when
        they are off). `near`: lexical matches also take the words a query word begins
        and the words one typo away (ai/search.py). Only the types the caller may read
        are searched, only the records its scope reaches, only the fields its role
        shows."""
        wanted = list(types or SEARCH_KINDS)
        unknown = [t for t in wanted if t not in SEARCH_KINDS]
        if unknown:
            message = f"unknown type(s) {', '.join(unknown)}; use {', '.join(SEARCH_KINDS)}"
            raise Validation(message, [{"field": "types", "message": message}])
        if not query.strip():
            raise Validation("q needs at least one word", [{"field": "q", "message": "empty"}])
        embeddings = self.index.embeddings()
        mode = mode or ("hybrid" if embeddings else "lexical")
        if mode not in MODES:
            message = f"unknown mode {mode!r}; use {', '.join(MODES)}"
            raise Validation(message, [{"field": "mode", "message": message}])
        if mode != "lexical" and not embeddings:
            message = (
                f"{mode} search needs sentence embeddings, which are off here (install the"
                " `ai` extra, and leave NEXTFLOW_AI_EMBEDDINGS unset); use mode=lexical"
            )
            raise Validation(message, [{"field": "mode", "message": message}])
        allowed = [t for t in wanted if principal.can(_SEARCH_PERMISSION[t])]
        if not allowed:
            raise Forbidden("missing permission: customer:read or ticket:read")
        owners = {}
        for kind in allowed:
            reach = principal.owners(_SEARCH_PERMISSION[kind])
            if reach is not None:
                owners[kind] = sorted(reach)
        hidden = {kind: sorted(principal.hidden.get(kind, ())) for kind in allowed}
        if not search_tokens(query):  # no word to look for (only punctuation, symbols)
            return SearchResult(query=query, types=allowed, mode=mode, data=[])
        try:
            hits = await self.index.search(query, allowed, limit, mode, owners, hidden, near)
        except Exception as exc:
            if not isinstance(cause(exc), StaleShardMap):
                raise
            await self.leads.reload()  # a shard moved meanwhile: plan once more
            hits = await self.index.search(query, allowed, limit, mode, owners, hidden, near)
        return SearchResult(
            query=query, types=allowed, mode=mode,
            data=[SearchHit.model_validate(h) for h in hits],
        )  # fmt: skip

    # -- ticket summary and next best action -------------------------------------------
    async def ticket_summary(self, principal: Principal, ticket_id: int) -> TicketSummary:
        from deployments.support.schemas import CommentListQuery

        ticket = await self.support.get.remote(principal, ticket_id)
        page = await self.support.list_comments.remote(
            principal, ticket_id, CommentListQuery(limit=200)
        )
        parts = [("description", f"{ticket.subject}. {ticket.description}")]
        parts += [(f"user {c.author_id}", c.body) for c in page.data]
        note = None
        if self.chat is not None:
            try:
                text = await self.chat.summarize(parts)
                return TicketSummary(
                    ticket_id=ticket_id, method="chat", model=self.chat.model, summary=text,
                    sentences=[],
                )  # fmt: skip
            except ChatUnavailable as exc:
                log.warning("ticket %s: chat summary unavailable (%s)", ticket_id, exc)
                note = f"chat model unavailable ({exc}); extractive summary instead"
        found = await summarize.options(**task_options()).remote(parts, 3)
        return TicketSummary(ticket_id=ticket_id, note=note, **found)

    async def ticket_next_actions(self, principal: Principal, ticket_id: int) -> NextActions:
        ticket = await self.support.get.remote(principal, ticket_id)
        return NextActions(
            record_type="ticket", record_id=ticket_id, actions=ticket_actions(ticket)
        )

    async def deal_next_actions(self, principal: Principal, deal_id: int) -> NextActions:
        deal = await self.sales.get_deal.remote(principal, deal_id)
        lead_score = None
        key = deal.source_key or ""
        if key.startswith("lead:") and key[5:].isdigit() and principal.can("lead:read"):
            try:
                lead_score = (await self.score_lead(principal, int(key[5:]))).score
            except (NotFound, Conflict):  # lead gone, or no model yet
                lead_score = None
        chance = lead_score if lead_score is not None else deal.probability / 100
        return NextActions(
            record_type="deal", record_id=deal_id, score=round(chance, 4),
            actions=deal_actions(deal, lead_score),
        )  # fmt: skip
