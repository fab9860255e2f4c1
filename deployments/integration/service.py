"""Integration logic: jobs and the bulk customer import. No SQL here (repo.py), no
Ray or FastAPI (deployment.py).

An import runs as an asyncio task in the IntegrationService replica that accepted it,
outside the HTTP request. Why not a Ray task: the work is mostly waiting on the shard
managers (COPY and the upsert run in PostgreSQL through them), and the CPU part
(parsing and validating rows) runs in a worker thread, chunk by chunk, overlapped
with the writes of the previous chunk; a task in the replica needs no worker process
start-up, no second copy of the settings and shard map, and the replica's own
`max_ongoing_requests` stays free for `GET /jobs/{id}`. The job row is the state: a
replica that dies leaves a job that stops reporting, which the next replica start
marks failed (`fail_abandoned`).
"""

from __future__ import annotations

import asyncio
import csv
import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from deployments._kit.errors import Conflict, NotFound, Validation
from deployments._kit.principal import Principal
from deployments.integration import csvio, repo
from deployments.integration.repo import JobAccepted, JobRead
from shards.client import Database, Shards

log = logging.getLogger("nextflow.integration")
KIND_CUSTOMER_IMPORT = "customer_import"
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


@dataclass
class Chunk:
    rows: list[csvio.ImportRow] = field(default_factory=list)
    errors: list[csvio.RowError] = field(default_factory=list)
    read: int = 0
    batches: dict[int, csvio.ShardBatch] = field(default_factory=dict)


class ImportFailed(Exception):
    pass


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


def read_header(path: Path) -> list[str]:
    """The checked header of a CSV file; raises Validation with a clear message."""
    try:
        with path.open("rb") as f:
            header = next(csv.reader(text_lines(f)), [])
    except ImportFailed as exc:
        raise Validation(str(exc)) from None
    except csv.Error as exc:
        raise Validation(f"line 1: {exc}") from None
    try:
        return csvio.check_header(header)
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


def _records(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) of each record; blank lines skipped."""
    line = reader.line_num + 1
    try:
        for cells in reader:
            if cells:
                yield line, cells
            line = reader.line_num + 1
    except csv.Error as exc:
        raise ImportFailed(f"line {line}: {exc}") from None


class IntegrationService:
    def __init__(self, jobs: Database, customers: Shards, work_dir: Path) -> None:
        self.jobs = jobs
        self.customers = customers
        self.work_dir = work_dir
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

    # -- import ---------------------------------------------------------------------
    async def start_customer_import(self, principal: Principal, upload: str) -> JobAccepted:
        """Accept an uploaded CSV (a file this service now owns) and import it in the
        background; the job says how it goes."""
        path = Path(upload)
        try:
            principal.require("customer:write")
            read_header(path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        job = await self.jobs.write(repo.create_job, KIND_CUSTOMER_IMPORT, principal.user_id)
        task = asyncio.create_task(self.run_customer_import(job.id, path, principal))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return JobAccepted(job_id=job.id, status_url=f"/jobs/{job.id}")

    async def run_customer_import(self, job_id: int, path: Path, principal: Principal) -> None:
        counts = Counts()
        error_path = self.work_dir / f"job-{job_id}-errors.csv"
        try:
            status, error = await self._import(job_id, path, principal, counts, error_path)
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
        try:
            await self.jobs.write(
                repo.finish_job, job_id, status, counts.rows, counts.result(errors), error
            )
        except Exception:
            log.exception("import job %s: could not record its end", job_id)

    async def _import(
        self, job_id: int, path: Path, principal: Principal, counts: Counts, error_path: Path
    ) -> tuple[repo.JobStatus, str | None]:
        try:
            total = await asyncio.to_thread(count_records, path)
        except csv.Error as exc:
            raise ImportFailed(f"not CSV: {exc}") from None
        if not await self.jobs.write(repo.start_job, job_id, total):
            return "cancelled", None
        may_assign = "customer:assign" in principal.permissions
        seen: dict[str, int] = {}
        with path.open("rb") as f, error_path.open("w", newline="", encoding="utf-8") as ef:
            reader = csv.reader(text_lines(f))
            try:
                header = csvio.check_header(next(reader, []))
            except csvio.BadHeader as exc:
                raise ImportFailed(f"header: {exc}") from None
            except csv.Error:
                raise ImportFailed("line 1: not a CSV header") from None
            errors = csv.writer(ef, lineterminator="\r\n")
            errors.writerow([*csvio.ERROR_COLUMNS, *header])
            records = _records(reader)
            writers = asyncio.Semaphore(WRITERS)

            def parse() -> Chunk:
                chunk = Chunk()
                for line, cells in records:
                    chunk.read += 1
                    parsed = csvio.parse_row(line, header, cells, principal.user_id, may_assign)
                    if isinstance(parsed, csvio.ImportRow):
                        first = seen.setdefault(parsed.key, line)
                        if first != line:
                            parsed = csvio.RowError(line, _again(parsed, first), tuple(cells))
                    if isinstance(parsed, csvio.RowError):
                        chunk.errors.append(parsed)
                    else:
                        chunk.rows.append(parsed)
                    if chunk.read >= CHUNK:
                        break
                chunk.batches = csvio.encode_by_shard(chunk.rows, self.customers.place)
                chunk.rows = []
                return chunk

            # Writes of up to IN_FLIGHT chunks run while the next chunk is parsed
            # (WRITERS batches at a time); they land (and count, and report progress)
            # in file order.
            in_flight: deque[tuple[asyncio.Task[tuple[int, int, int]], int, int]] = deque()

            async def land(keep: int, report: bool = True) -> bool:
                while len(in_flight) > keep:
                    task, read, failed = in_flight.popleft()
                    counts.add(await task, read, failed)
                    if report and not await self.jobs.write(repo.set_progress, job_id, counts.rows):
                        await land(0, report=False)  # what was sent still counts
                        return False
                return True

            while True:
                try:
                    chunk = await asyncio.to_thread(parse)
                except ImportFailed:
                    await land(0, report=False)  # what landed before the bad line counts
                    raise
                if not chunk.read:
                    break
                for e in chunk.errors:
                    errors.writerow([e.line, e.message, *e.raw])
                task = asyncio.create_task(self._write(chunk.batches, principal, job_id, writers))
                in_flight.append((task, chunk.read, len(chunk.errors)))
                if not await land(IN_FLIGHT):
                    return "cancelled", None
            if not await land(0):
                return "cancelled", None
        return "succeeded", None

    async def _write(
        self,
        batches: dict[int, csvio.ShardBatch],
        principal: Principal,
        job_id: int,
        writers: asyncio.Semaphore,
    ) -> tuple[int, int, int]:
        """(created, updated, refused) of one chunk; refused: rows naming a customer the
        importer's write scope does not reach."""
        reach = principal.owners("customer:write")
        owners = None if reach is None else sorted(reach)

        async def write(shard: int, batch: csvio.ShardBatch) -> tuple[int, int, int]:
            async with writers:
                return await self.customers.write_bulk(
                    shard, repo.upsert_customers, batch, principal.user_id, job_id, owners
                )

        done = await asyncio.gather(*(write(shard, b) for shard, b in batches.items()))
        return sum(c for c, _, _ in done), sum(u for _, u, _ in done), sum(r for _, _, r in done)


def _again(row: csvio.ImportRow, first: int) -> str:
    if row.key.startswith("ext:"):
        return f"external_id: already on line {first}"
    return f"the same values as line {first} (a row without external_id is known by its values)"


def _may_see(principal: Principal, job: JobRead) -> bool:
    return job.created_by == principal.user_id or principal.role == "admin"


def upload_dir(data_dir: Path) -> Path:
    path = data_dir / "imports"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path
