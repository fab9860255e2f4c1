"""Integration logic: jobs and the bulk customer import. No SQL here (repo.py), no
Ray (app.py), no HTTP (routes.py).

An import runs as an asyncio task in the IntegrationService replica that took the
upload (its ingress saved the file to this machine's disk) and accepted it, outside
the HTTP request. Why not a Ray task: the work is mostly waiting on the shard
managers (COPY and the upsert run in PostgreSQL through them), and the CPU part
(parsing and validating rows) runs in a worker thread, chunk by chunk, overlapped
with the writes of the previous chunk; a task in the replica needs no worker process
start-up, no second copy of the settings and shard map, and the replica's own
`max_ongoing_requests` stays free for `GET /v1/integration/jobs/{id}`. The job row
is the state: a replica that dies leaves a job that stops reporting, which the next
replica start marks failed (`fail_abandoned`).
"""

from __future__ import annotations

import asyncio
import csv
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from deployments._kit import bulk
from deployments._kit.custom_fields import FieldDefinition, unique_fields
from deployments._kit.unique_values import NO_CLAIM, Claim, Records, claim_rows, token_of
from deployments.auth.fields import FieldCache
from deployments.customer.schemas import CustomerListQuery, CustomerRead
from deployments.file.blobs import BlobStore
from deployments.integration import csvio, privacy, repo
from deployments.integration.repo import JobAccepted, JobRead
from gateway.errors import Conflict, NotFound, RateLimited, Validation
from gateway.listing import Page
from gateway.principal import Principal
from shards.client import Database, Shards

log = logging.getLogger("nextflow.integration")
ParseRemote = Callable[
    [list[str], int, Sequence[str], int, bool, int, dict[str, FieldDefinition] | None],
    Awaitable[csvio.ParsedChunk],
]
# A page of customers as the customer application answers it (a Serve handle call).
ListCustomers = Callable[[Principal, CustomerListQuery], Awaitable[Page[CustomerRead]]]
KIND_CUSTOMER_IMPORT = bulk.CUSTOMER_IMPORT
KIND_CUSTOMER_EXPORT = "customer_export"
KIND_PRIVACY_EXPORT = "privacy_export"
EXPORT_PAGE = 200  # customers asked for at once (a list's largest page)
KEEP_NOTE = "NEXTFLOW_EXPORT_KEEP_S after the export ended"
CHUNK = 20_000  # rows parsed per step; written as one COPY batch per logical shard
IN_FLIGHT = 2  # chunks being written while the next one is parsed
# Batches written at once, over all servers: enough to keep the servers busy, and few
# enough that an import never holds most of a server's pool (`pool_max_size`) from
# the requests of everyone else.
WRITERS = 4
ABANDONED_AFTER_S = 300.0


@dataclass
class Counts:
    rows: int = 0
    created: int = 0
    updated: int = 0
    refused: int = 0
    failed: int = 0

    def add(self, written: tuple[int, int, int], read: int, failed: int) -> None:
        """A chunk whose writes have landed: `written` is (created, updated, refused)."""
        self.created += written[0]
        self.updated += written[1]
        self.refused += written[2]
        self.rows += read
        self.failed += failed

    def result(self, error_file: str | None) -> dict[str, Any]:
        unchanged = self.rows - self.failed - self.created - self.updated - self.refused
        return {
            "rows": self.rows, "created": self.created, "updated": self.updated,
            "unchanged": unchanged, "refused": self.refused, "failed": self.failed,
            "error_file": error_file,
        }  # fmt: skip


class ImportFailed(Exception):
    pass


class ExportCancelled(Exception):
    pass


# An export job's file: (media type, file name) by the job's kind.
EXPORT_FILES = {
    KIND_CUSTOMER_EXPORT: ("text/csv; charset=utf-8", "customers-{id}.csv"),
    KIND_PRIVACY_EXPORT: ("application/zip", "privacy-{id}.zip"),
}
PERSONS = {"customer": ("customer", "get"), "contact": ("customer", "get_contact"),
           "lead": ("marketing", "get_lead")}  # fmt: skip


def export_key(job_id: int, kind: str = KIND_CUSTOMER_EXPORT) -> str:
    """Where an export's file is kept in the blob store (outside the File service's
    `<shard>/` keys, which its orphan sweep owns)."""
    if kind == KIND_PRIVACY_EXPORT:
        return f"exports/privacy-{job_id}.zip"
    return f"exports/customers-{job_id}.csv"


async def _file_chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, size):
            yield chunk


def text_lines(f: BinaryIO) -> Iterator[str]:
    """The file's lines as text, each checked as UTF-8 on its own, so a bad byte is
    reported with its line number. A byte-order mark (spreadsheets write one) is not
    part of the header."""
    for number, raw in enumerate(f, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFailed(
                f"line {number}: not UTF-8 text (byte {exc.start + 1}); save the file as UTF-8"
            ) from None
        yield line.removeprefix("\ufeff") if number == 1 else line


def read_header(path: Path, custom: Collection[str] = ()) -> list[str]:
    """The checked header of a CSV file (`custom`: the keys its `cf.` columns may
    name); raises Validation with a clear message."""
    try:
        with path.open("rb") as f:
            header = next(csv.reader(text_lines(f)), [])
    except ImportFailed as exc:
        raise Validation(str(exc)) from None
    except csv.Error as exc:
        raise Validation(f"line 1: {exc}") from None
    try:
        return csvio.check_header(header, custom)
    except csvio.BadHeader as exc:
        raise Validation(f"header: {exc}") from None


def count_records(path: Path) -> int:
    """The number of records after the header (blank lines are not records). A file
    with no quote character and no bare carriage return has one record per non-blank
    line, counted without parsing; any other file is counted by the CSV reader."""
    with path.open("rb") as f:
        lines = 0
        for line in f:
            if b'"' in line or b"\r" in line.rstrip(b"\r\n"):
                break
            if line.strip(b"\r\n"):
                lines += 1
        else:
            return max(lines - 1, 0)
        f.seek(0)
        return max(sum(1 for cells in csv.reader(text_lines(f)) if cells) - 1, 0)


class ChunkReader:
    """A CSV file's records after its header, a chunk at a time, as the lines they were
    read from (what `csvio.parse_chunk` takes): a record with quoted line breaks is
    never cut, and line numbers are the file's."""

    def __init__(self, f: BinaryIO) -> None:
        self._raw: list[str] = []  # the lines the reader took since the last chunk
        self._reader = csv.reader(_kept(text_lines(f), self._raw))

    def header(self, custom: Collection[str] = ()) -> list[str]:
        try:
            return csvio.check_header(next(self._reader, []), custom)
        except csvio.BadHeader as exc:
            raise ImportFailed(f"header: {exc}") from None
        except csv.Error:
            raise ImportFailed("line 1: not a CSV header") from None

    def next_chunk(self, size: int) -> tuple[list[str], int, int]:
        """Up to `size` records: (their lines, the first one's number, how many
        records; 0 at the end of the file). Raises ImportFailed at a line that is
        not CSV or not UTF-8."""
        first, records = self._reader.line_num + 1, 0
        self._raw.clear()
        try:
            for cells in self._reader:
                if cells:
                    records += 1
                    if records >= size:
                        break
        except csv.Error as exc:
            raise ImportFailed(f"line {self._reader.line_num}: {exc}") from None
        return list(self._raw), first, records


class IntegrationService:
    def __init__(
        self,
        jobs: Database,
        customers: Shards,
        work_dir: Path,
        parse_remote: ParseRemote | None = None,
        parsers: int = 0,
        max_rows: int | None = None,
        max_running_per_user: int | None = None,
        store: BlobStore | None = None,
        list_customers: ListCustomers | None = None,
        fields: FieldCache | None = None,
        apps: privacy.Handles | None = None,
    ) -> None:
        """`parse_remote`: `csvio.parse_chunk` elsewhere (a Ray task,
        deployments/integration/tasks.py), used for files of more than one chunk,
        `parsers` chunks at once; without it every chunk is parsed in a thread here.
        `store` and `list_customers`: where exports are written and how their pages
        are read (without them this service exports nothing)."""
        self.jobs = jobs
        self.customers = customers
        self.fields = fields  # the customers' custom fields (None: `cf.` columns refused)
        # An import row names its customer by its external id, else by its content key.
        self._records = Records(customers, "customers", identity=_IDENTITY)
        self.work_dir = work_dir
        self.store = store
        self._list_customers = list_customers
        self._apps = apps  # the services' handles, for privacy exports
        self._parse_remote = parse_remote
        self._parsers = parsers
        self._max_rows = max_rows
        self._max_running = max_running_per_user
        self._tasks: set[asyncio.Task[None]] = set()

    # -- jobs -----------------------------------------------------------------------
    async def get_job(self, principal: Principal, job_id: int) -> JobRead:
        # From the primary: a poll must see the job it just started and its latest
        # progress, whoever wrote them (the worker, another replica).
        job = await self.jobs.read_primary(repo.get_job, job_id)
        if job is None or not _may_see(principal, job):
            raise NotFound(f"job {job_id} not found")
        return job

    async def cancel_job(self, principal: Principal, job_id: int) -> JobRead:
        await self.get_job(principal, job_id)
        job = await self.jobs.write(repo.cancel_job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job.status != "cancelled":
            raise Conflict(f"job {job_id} already {job.status}")
        return job

    async def error_file(self, principal: Principal, job_id: int) -> str:
        job = await self.get_job(principal, job_id)
        path = (job.result or {}).get("error_file")
        if not path or not Path(path).is_file():
            raise NotFound(f"job {job_id} has no error file")
        return str(path)

    async def fail_abandoned(self) -> int:
        return await self.jobs.write(repo.fail_abandoned, ABANDONED_AFTER_S)

    # -- export ---------------------------------------------------------------------
    async def start_customer_export(
        self, principal: Principal, query: CustomerListQuery
    ) -> JobAccepted:
        """Export every customer `query`'s filters select (as `GET /v1/customers`
        would list them to this caller) as CSV, in the background; the job says how
        it goes and, once it has succeeded, where the file is. The first page is read
        here, so a filter or permission the customer application refuses is the
        caller's answer (4xx), not a failed job; it also counts the customers."""
        if self.store is None or self._list_customers is None:
            raise NotFound("exports are not available here")
        query = query.model_copy(update={"limit": EXPORT_PAGE, "cursor": None, "count": True})
        first = await self._list_customers(principal, query)
        job = await self._new_job(principal.user_id, KIND_CUSTOMER_EXPORT, "exports")
        query = query.model_copy(update={"count": False})
        return self._run(job, self.run_customer_export(job.id, principal, query, first))

    async def run_customer_export(
        self,
        job_id: int,
        principal: Principal,
        query: CustomerListQuery,
        first: Page[CustomerRead],
    ) -> None:
        assert self.store is not None
        rows = [0]
        result: dict[str, Any] | None = None
        status: repo.JobStatus
        error = None
        try:
            if not await self.jobs.write(repo.start_job, job_id, first.total):
                status = "cancelled"
            else:
                key = export_key(job_id)
                chunks = self._export_chunks(job_id, principal, query, first, rows)
                size = await self.store.put_stream(key, chunks)
                status = "succeeded"
                result = {
                    "rows": rows[0], "bytes": size,
                    "file_url": f"/v1/integration/jobs/{job_id}/file",
                }  # fmt: skip
        except ExportCancelled:
            status = "cancelled"
        except Exception as exc:  # the customer application or the store away, a bug
            log.exception("export job %s failed", job_id)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        await self._record_end(job_id, status, rows[0], result or {"rows": rows[0]}, error)

    async def _export_chunks(
        self,
        job_id: int,
        principal: Principal,
        query: CustomerListQuery,
        page: Page[CustomerRead],
        rows: list[int],
    ) -> AsyncIterator[bytes]:
        """The CSV, a page at a time, each counted in `rows[0]` and reported as the
        job's progress; raises ExportCancelled once the job was cancelled (the store
        then keeps nothing)."""
        assert self._list_customers is not None
        yield csvio.csv_lines([csvio.EXPORT_COLUMNS]).encode()
        while True:
            yield csvio.csv_lines(csvio.export_cells(c) for c in page.data).encode()
            rows[0] += len(page.data)
            if not await self.jobs.write(repo.set_progress, job_id, rows[0]):
                raise ExportCancelled
            if not page.next_cursor:
                return
            page = await self._list_customers(
                principal, query.model_copy(update={"cursor": page.next_cursor})
            )

    async def start_privacy_export(
        self, principal: Principal, kind: privacy.Person, person_id: int
    ) -> JobAccepted:
        """Gather everything held about one person (privacy.py) into one archive, in
        the background (`privacy:export`). The person is read here first, so one the
        caller may not read (or that does not exist) is a 404 now, not a failed job."""
        principal.require("privacy:export")
        if self.store is None or self._apps is None:
            raise NotFound("exports are not available here")
        app, method = PERSONS[kind]
        await getattr(self._apps[app], method).remote(principal, person_id)
        job = await self._new_job(principal.user_id, KIND_PRIVACY_EXPORT, "exports")
        return self._run(job, self.run_privacy_export(job.id, principal, kind, person_id))

    async def run_privacy_export(
        self, job_id: int, principal: Principal, kind: privacy.Person, person_id: int
    ) -> None:
        assert self.store is not None
        assert self._apps is not None
        store = self.store
        parts = [0]
        result: dict[str, Any] | None = None
        error = None
        status: repo.JobStatus

        async def progress(done: int) -> None:
            parts[0] = done
            if not await self.jobs.write(repo.set_progress, job_id, done):
                raise ExportCancelled

        try:
            if not await self.jobs.write(repo.start_job, job_id, None):
                status = "cancelled"
            else:
                archive = await privacy.gather(
                    self._apps, store, principal, kind, person_id, progress
                )
                try:
                    size = await store.put_stream(
                        export_key(job_id, KIND_PRIVACY_EXPORT), _file_chunks(archive)
                    )
                finally:
                    archive.unlink(missing_ok=True)
                status = "succeeded"
                result = {
                    "subject": {"type": kind, "id": str(person_id)}, "bytes": size,
                    "file_url": f"/v1/integration/jobs/{job_id}/file",
                }  # fmt: skip
        except ExportCancelled:
            status = "cancelled"
        except Exception as exc:  # a service or the store away, a bug
            log.exception("privacy export job %s failed", job_id)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        await self._record_end(job_id, status, parts[0], result or {}, error)

    async def export_file(self, principal: Principal, job_id: int) -> tuple[str, int, str, str]:
        """The blob key, size, media type and file name of a succeeded export's file."""
        job = await self.get_job(principal, job_id)
        if job.kind not in EXPORT_FILES:
            raise NotFound(f"job {job_id} is not an export")
        if job.status in ("queued", "running"):
            raise Conflict(f"export {job_id} is {job.status}: its file is ready once it succeeded")
        if job.status != "succeeded":
            raise NotFound(f"export {job_id} {job.status}: it has no file")
        size = None
        key = export_key(job_id, job.kind)
        if (job.result or {}).get("file_url") and self.store is not None:
            size = await self.store.size(key)
        if size is None:
            raise NotFound(f"export {job_id}'s file was removed (kept {KEEP_NOTE}); export again")
        media, name = EXPORT_FILES[job.kind]
        return key, size, media, name.format(id=job_id)

    async def remove_old_exports(self, older_than_s: float) -> int:
        """Delete the files of exports that succeeded more than `older_than_s` ago; each
        job stays, its result without `file_url`. Returns how many were removed."""
        if self.store is None:
            return 0
        removed = 0
        for kind in EXPORT_FILES:
            expired = await self.jobs.read_primary(repo.exports_to_remove, kind, older_than_s)
            for job_id in expired:
                await self.store.delete(export_key(job_id, kind))
                await self.jobs.write(repo.forget_file, job_id)
            removed += len(expired)
        return removed

    # -- import ---------------------------------------------------------------------
    async def start_customer_import(self, principal: Principal, upload: str) -> JobAccepted:
        """Accept an uploaded CSV (a file this service now owns) and import it in the
        background; the job says how it goes. Refused at once (and the file deleted):
        no `customer:write`, a bad header, more records than `max_rows` (422), or
        `max_running_per_user` imports of the caller's already queued or running (429)."""
        path = Path(upload)
        try:
            principal.require("customer:write")
            read_header(path, await self._custom_fields() or {})
            total = await self._count(path)
            job = await self._new_job(principal.user_id, KIND_CUSTOMER_IMPORT, "imports")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return self._run(job, self.run_customer_import(job.id, path, principal, total))

    async def _custom_fields(self) -> dict[str, FieldDefinition] | None:
        return None if self.fields is None else await self.fields.of("customers")

    def _run(self, job: JobRead, work: Awaitable[None]) -> JobAccepted:
        """Run a job's work in the background in this replica (kept referenced until
        it ends); what the caller polls."""

        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return JobAccepted(job_id=job.id, status_url=f"/v1/integration/jobs/{job.id}")

    async def _count(self, path: Path) -> int:
        try:
            total = await asyncio.to_thread(count_records, path)
        except csv.Error as exc:
            raise Validation(f"not CSV: {exc}") from None
        except ImportFailed as exc:
            raise Validation(str(exc)) from None
        if self._max_rows is not None and total > self._max_rows:
            raise Validation(
                f"the file has {total:,} records; one import takes at most {self._max_rows:,}"
                " (NEXTFLOW_IMPORT_MAX_ROWS): split the file"
            )
        return total

    async def _new_job(self, user_id: int, kind: str, what: str) -> JobRead:
        if self._max_running is None:
            return await self.jobs.write(repo.create_job, kind, user_id)
        job = await self.jobs.write(repo.create_job_capped, kind, user_id, self._max_running)
        if job is None:
            raise RateLimited(
                f"you have {self._max_running} {what} queued or running; start another"
                " when one has ended (GET /v1/integration/jobs/{id})",
                retry_after=30,
            )
        return job

    async def run_customer_import(
        self, job_id: int, path: Path, principal: Principal, total: int
    ) -> None:
        counts = Counts()
        error_path = self.work_dir / f"job-{job_id}-errors.csv"
        try:
            status, error = await self._import(job_id, path, principal, total, counts, error_path)
        except ImportFailed as exc:
            status, error = "failed", str(exc)
        except Exception as exc:  # a shard down, a bug: the job says so, the replica lives
            log.exception("import job %s failed", job_id)
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            path.unlink(missing_ok=True)
        errors = str(error_path) if counts.failed else None
        if not counts.failed:
            error_path.unlink(missing_ok=True)
        await self._record_end(job_id, status, counts.rows, counts.result(errors), error)

    async def _record_end(
        self,
        job_id: int,
        status: repo.JobStatus,
        done: int,
        result: dict[str, Any],
        error: str | None,
    ) -> None:
        """A job's end, as far as the jobs database takes it (away now: the job stops
        reporting, and the next replica start marks it failed: `fail_abandoned`)."""
        try:
            await self.jobs.write(repo.finish_job, job_id, status, done, result, error)
        except Exception:
            log.exception("job %s: could not record its end", job_id)

    async def _import(
        self,
        job_id: int,
        path: Path,
        principal: Principal,
        total: int,
        counts: Counts,
        error_path: Path,
    ) -> tuple[repo.JobStatus, str | None]:
        if not await self.jobs.write(repo.start_job, job_id, total):
            return "cancelled", None
        may_assign = "customer:assign" in principal.permissions
        # The definitions as the import starts hold for every row of it.
        definitions = await self._custom_fields()
        # A file of one chunk is parsed here; a larger one in Ray tasks, `parsers` at once.
        remote = self._parse_remote is not None and self._parsers > 0 and total > CHUNK
        parsers = self._parsers if remote else 1
        seen: dict[str, int] = {}  # key -> the line it was first on
        with path.open("rb") as f, error_path.open("w", newline="", encoding="utf-8") as ef:
            chunks = ChunkReader(f)
            header = chunks.header(definitions or {})
            errors = csv.writer(ef, lineterminator="\r\n")
            errors.writerow([*csvio.ERROR_COLUMNS, *header])
            writers = asyncio.Semaphore(WRITERS)
            shards = self.customers.map.logical_shards

            async def parse(lines: list[str], first: int) -> csvio.ParsedChunk:
                args = (lines, first, header, principal.user_id, may_assign, shards, definitions)
                if remote and self._parse_remote is not None:
                    return await self._parse_remote(*args)
                return await asyncio.to_thread(csvio.parse_chunk, *args)

            # Up to `parsers` chunks are parsed while up to IN_FLIGHT parsed ones are
            # written (WRITERS batches at a time); they land (and count, and report
            # progress) in file order.
            parsing: deque[tuple[asyncio.Future[csvio.ParsedChunk], list[str], int]] = deque()
            in_flight: deque[tuple[asyncio.Task[tuple[int, int, int]], int, int]] = deque()

            async def land(keep: int, report: bool = True) -> bool:
                while len(in_flight) > keep:
                    task, read, failed = in_flight.popleft()
                    counts.add(await task, read, failed)
                    if report and not await self.jobs.write(repo.set_progress, job_id, counts.rows):
                        await land(0, report=False)  # what was sent still counts
                        return False
                return True

            failure: ImportFailed | None = None
            reading = True
            try:
                while True:
                    while reading and len(parsing) < parsers:
                        try:
                            lines, first, records = await asyncio.to_thread(
                                chunks.next_chunk, CHUNK
                            )
                        except ImportFailed as exc:  # chunks before the bad line still land
                            failure, reading = exc, False
                            break
                        if not records:
                            reading = False
                            break
                        parsing.append((asyncio.ensure_future(parse(lines, first)), lines, first))
                    if not parsing:
                        break
                    future, lines, first = parsing.popleft()
                    chunk = _drop_repeats(await future, seen, lines, first)
                    if await self._cancelled(job_id):  # no chunk is written after a cancel
                        await land(0, report=False)
                        return "cancelled", None
                    chunk, claim = await self._claim(chunk, definitions, lines, first)
                    for e in chunk.errors:
                        errors.writerow([e.line, e.message, *e.raw])
                    task = asyncio.create_task(
                        self._write(chunk.batches, principal, job_id, writers, claim)
                    )
                    in_flight.append((task, chunk.read, len(chunk.errors)))
                    if not await land(IN_FLIGHT):
                        return "cancelled", None
            finally:  # cancelled, or a parse failed: the other parses are not wanted
                for future, _, _ in parsing:
                    future.cancel()
            if failure is not None:
                await land(0, report=False)
                raise failure
            if not await land(0):
                return "cancelled", None
        return "succeeded", None

    async def _cancelled(self, job_id: int) -> bool:
        job = await self.jobs.read_primary(repo.get_job, job_id)
        return job is None or job.status == "cancelled"

    async def _write(
        self,
        batches: dict[int, csvio.ShardBatch],
        principal: Principal,
        job_id: int,
        writers: asyncio.Semaphore,
        claim: Claim = NO_CLAIM,
    ) -> tuple[int, int, int]:
        """(created, updated, refused) of one chunk; refused: rows naming a customer the
        importer's write scope does not reach. `claim`: the chunk's unique values, kept
        once it is written."""
        reach = principal.owners("customer:write")
        owners = None if reach is None else sorted(reach)

        async def write(shard: int, batch: csvio.ShardBatch) -> tuple[int, int, int]:
            async with writers:
                return await self.customers.write_bulk(
                    shard, repo.upsert_customers, batch, principal.user_id, job_id, owners
                )

        async with claim:
            done = await asyncio.gather(*(write(shard, b) for shard, b in batches.items()))
        return sum(c for c, _, _ in done), sum(u for _, u, _ in done), sum(r for _, _, r in done)

    async def _claim(
        self,
        chunk: csvio.ParsedChunk,
        definitions: dict[str, FieldDefinition] | None,
        lines: list[str],
        first_line: int,
    ) -> tuple[csvio.ParsedChunk, Claim]:
        """The chunk less the rows whose unique custom field values another customer
        holds (each an error of its line), and the claims of the others' values (one
        auth database call; a row claims with its key, so a re-import owns its claims)."""
        unique = unique_fields(definitions or {})
        if not unique or self.fields is None:
            return chunk, NO_CLAIM
        rows: list[tuple[dict[str, Any], str, str]] = []
        where: list[tuple[int, int]] = []
        for shard, batch in chunk.batches.items():
            for i, values in enumerate(batch.unique):
                if values:
                    key = batch.keys[i]
                    rows.append((dict(values), token_of(f"import\x00{key}", "customers"), key))
                    where.append((shard, i))
        claim, refused = await claim_rows(self.fields, self._records, unique, rows, field="cf")
        if not refused:
            return chunk, claim
        errors = list(chunk.errors)
        drop: dict[int, set[int]] = {}
        for r, problems in refused.items():
            shard, i = where[r]
            drop.setdefault(shard, set()).add(i)
            line = chunk.batches[shard].lines[i]
            cells = next(csv.reader(lines[line - first_line :]))
            message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            errors.append(csvio.RowError(line, message, tuple(cells)))
        batches = {s: b.without(drop[s]) if s in drop else b for s, b in chunk.batches.items()}
        errors.sort(key=lambda e: e.line)
        kept = {s: b for s, b in batches.items() if b.rows}
        return csvio.ParsedChunk(chunk.read, errors, kept), claim


_IDENTITY = "CASE WHEN external_id IS NOT NULL THEN 'ext:' || external_id ELSE source_key END"


def _kept(lines: Iterator[str], into: list[str]) -> Iterator[str]:
    """`lines`, each also appended to `into` as it is taken."""
    for line in lines:
        into.append(line)
        yield line


def _drop_repeats(
    chunk: csvio.ParsedChunk, seen: dict[str, int], lines: list[str], first_line: int
) -> csvio.ParsedChunk:
    """`chunk` less the rows whose key an earlier line of the file had (`seen`: each key
    and the line it was first on, updated), each reported as an error of its line."""
    errors = list(chunk.errors)
    batches: dict[int, csvio.ShardBatch] = {}
    for shard, batch in chunk.batches.items():
        drop: set[int] = set()
        for i, (key, line) in enumerate(zip(batch.keys, batch.lines, strict=True)):
            first = seen.setdefault(key, line)
            if first != line:  # rows of a key are on one shard, in file order
                drop.add(i)
                cells = next(csv.reader(lines[line - first_line :]))
                errors.append(csvio.RowError(line, _again(key, first), tuple(cells)))
        if drop:
            batch = batch.without(drop)
        if batch.rows:
            batches[shard] = batch
    errors.sort(key=lambda e: e.line)
    return csvio.ParsedChunk(chunk.read, errors, batches)


def _again(key: str, first: int) -> str:
    if key.startswith("ext:"):
        return f"external_id: already on line {first}"
    return f"the same values as line {first} (a row without external_id is known by its values)"


def _may_see(principal: Principal, job: JobRead) -> bool:
    return job.created_by == principal.user_id or principal.role == "admin"


def upload_dir(data_dir: Path) -> Path:
    path = data_dir / "imports"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
