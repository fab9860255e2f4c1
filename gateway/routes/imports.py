"""Bulk CSV import (as a job), CSV export, and jobs. Path: this file ->
deployments/integration (import, jobs) and deployments/customer (export pages)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import FileResponse, Response, StreamingResponse

from cluster.settings import get_settings
from deployments.customer.schemas import CustomerListQuery
from deployments.integration import csvio
from deployments.integration.repo import JobAccepted, JobRead
from deployments.integration.service import upload_dir
from gateway.context import CurrentPrincipal, Services, ServicesDep, json
from gateway.listing import parse_list_params
from gateway.principal import Principal
from gateway.uploads import TooLarge, save_upload

router = APIRouter(tags=["imports"])
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]
EXPORT_PAGE = 200


@router.post("/imports/customers", status_code=202, response_model=JobAccepted)
async def import_customers(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Upload a CSV of customers (`multipart/form-data` with a file part, or a raw
    `text/csv` body). Columns (header row, any order, `name` required): name, email,
    phone, website, industry, tags (`;`-separated), owner_id, external_id. Rows with an
    `external_id` are upserted by it; the same file imported twice changes nothing.
    Answers `202` with the job to poll; bad rows are reported by line in the job's
    error file; a bad header or encoding, or more records than `NEXTFLOW_IMPORT_MAX_ROWS`
    (5,000,000), is a `422` here; while `NEXTFLOW_IMPORT_MAX_RUNNING_PER_USER` (2) of the
    caller's imports are queued or running, another is a `429` (with `Retry-After`)."""
    principal.require("customer:write")
    cap = get_settings().import_max_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap + 64 * 1024:
        raise TooLarge(f"the file is larger than {cap} bytes")
    dest = upload_dir(get_settings().data_dir) / f"upload-{uuid.uuid4().hex}.csv"
    try:
        await save_upload(request.stream(), request.headers.get("content-type", ""), dest, cap)
        accepted = await services.integration.start_customer_import.remote(principal, str(dest))
    except BaseException:
        dest.unlink(missing_ok=True)  # the service owns it once it accepted it
        raise
    return json(accepted, 202, headers={"Location": accepted.status_url})


@router.get("/jobs/{job_id}", response_model=JobRead)
async def get_job(job_id: JobId, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """A job's status, `progress` (`done` of `total` rows), `result` and `error`."""
    return json(await services.integration.get_job.remote(principal, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobRead)
async def cancel_job(job_id: JobId, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """Stop a queued or running job (`409` once it has finished). What an import
    wrote before the cancel took effect stays."""
    return json(await services.integration.cancel_job.remote(principal, job_id))


@router.get("/jobs/{job_id}/errors", response_class=FileResponse)
async def job_errors(job_id: JobId, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """An import's rejected rows as CSV: `line`, `error`, then the row's cells."""
    path = await services.integration.error_file.remote(principal, job_id)
    return FileResponse(
        path, media_type="text/csv; charset=utf-8", filename=f"job-{job_id}-errors.csv"
    )


@router.get("/exports/customers.csv", response_class=StreamingResponse)
async def export_customers(
    request: Request, principal: CurrentPrincipal, services: ServicesDep
) -> Response:
    """Every customer the filters of `GET /customers` select, as CSV, streamed page by
    page. Cells a spreadsheet would run as formulas start with `'`."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "cursor")]
    parsed = parse_list_params(params, CustomerListQuery)
    query = CustomerListQuery.model_validate({**parsed.model_dump(), "limit": EXPORT_PAGE})
    # The first page before the response starts: a bad filter or a missing permission
    # is still a problem+json answer, not a broken download.
    first = await services.customers.list.remote(principal, query)
    return StreamingResponse(
        _export(services, principal, query, first),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="customers.csv"'},
    )


async def _export(
    services: Services, principal: Principal, query: CustomerListQuery, page: object
) -> AsyncIterator[bytes]:
    yield csvio.csv_lines([csvio.EXPORT_COLUMNS]).encode()
    while True:
        yield csvio.csv_lines(csvio.export_cells(c) for c in page.data).encode()  # type: ignore[attr-defined]
        cursor = page.next_cursor  # type: ignore[attr-defined]
        if not cursor:
            return
        page = await services.customers.list.remote(
            principal, query.model_copy(update={"cursor": cursor})
        )
