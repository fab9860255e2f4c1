"""Bulk CSV import (as a job), CSV export, and jobs, under `/v1/integration` (the
integration application's prefix). Path: this file -> deployments/integration/service.py
(import, jobs) and the customer application (export pages, through a Serve handle)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from ray.serve.handle import DeploymentHandle
from starlette.responses import FileResponse, Response, StreamingResponse

from cluster.settings import get_settings
from deployments._kit.ingress import app_handle
from deployments.customer.schemas import CustomerListQuery, CustomerRead
from deployments.integration import csvio
from deployments.integration.repo import JobAccepted, JobRead
from deployments.integration.service import IntegrationService, upload_dir
from gateway.context import CurrentPrincipal, json, service
from gateway.listing import Page, parse_list_params
from gateway.principal import Principal
from gateway.uploads import TooLarge, save_upload

router = APIRouter(tags=["imports"])
Service = Annotated[IntegrationService, Depends(service)]
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]
EXPORT_PAGE = 200


@router.post("/imports/customers", status_code=202, response_model=JobAccepted)
async def import_customers(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Upload a CSV of customers (`multipart/form-data` with a file part, or a raw
    `text/csv` body). Columns (header row, any order, `name` required): name, email,
    phone, website, industry, tags (`;`-separated), owner_id, external_id. Rows with an
    `external_id` are upserted by it; the same file imported twice changes nothing.
    Answers `202` with the job to poll (`Location: /v1/integration/jobs/{id}`); bad rows
    are reported by line in the job's error file; a bad header or encoding, or more
    records than `NEXTFLOW_IMPORT_MAX_ROWS` (5,000,000), is a `422` here; while
    `NEXTFLOW_IMPORT_MAX_RUNNING_PER_USER` (2) of the caller's imports are queued or
    running, another is a `429` (with `Retry-After`). The import runs in this replica,
    from the file the upload was saved to here."""
    principal.require("customer:write")
    cap = get_settings().import_max_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap + 64 * 1024:
        raise TooLarge(f"the file is larger than {cap} bytes")
    dest = upload_dir(get_settings().data_dir) / f"upload-{uuid.uuid4().hex}.csv"
    try:
        await save_upload(request.stream(), request.headers.get("content-type", ""), dest, cap)
        accepted = await svc.start_customer_import(principal, str(dest))
    except BaseException:
        dest.unlink(missing_ok=True)  # the service owns it once it accepted it
        raise
    return json(accepted, 202, headers={"Location": accepted.status_url})


@router.get("/jobs/{job_id}", response_model=JobRead)
async def get_job(job_id: JobId, principal: CurrentPrincipal, svc: Service) -> Response:
    """A job's status, `progress` (`done` of `total` rows), `result` and `error`."""
    return json(await svc.get_job(principal, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobRead)
async def cancel_job(job_id: JobId, principal: CurrentPrincipal, svc: Service) -> Response:
    """Stop a queued or running job (`409` once it has finished). What an import
    wrote before the cancel took effect stays."""
    return json(await svc.cancel_job(principal, job_id))


@router.get("/jobs/{job_id}/errors", response_class=FileResponse)
async def job_errors(job_id: JobId, principal: CurrentPrincipal, svc: Service) -> Response:
    """An import's rejected rows as CSV: `line`, `error`, then the row's cells."""
    path = await svc.error_file(principal, job_id)
    return FileResponse(
        path, media_type="text/csv; charset=utf-8", filename=f"job-{job_id}-errors.csv"
    )


@router.get("/exports/customers.csv", response_class=StreamingResponse)
async def export_customers(request: Request, principal: CurrentPrincipal) -> Response:
    """Every customer the filters of `GET /v1/customers` select, as CSV, streamed page
    by page (each page asked of the customer application). Cells a spreadsheet would
    run as formulas start with `'`."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("limit", "cursor")]
    parsed = parse_list_params(params, CustomerListQuery)
    query = CustomerListQuery.model_validate({**parsed.model_dump(), "limit": EXPORT_PAGE})
    customers = app_handle("customer")
    # The first page before the response starts: a bad filter or a missing permission
    # is still a problem+json answer, not a broken download.
    first: Page[CustomerRead] = await customers.list.remote(principal, query)
    return StreamingResponse(
        _export(customers, principal, query, first),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="customers.csv"'},
    )


async def _export(
    customers: DeploymentHandle[Any],
    principal: Principal,
    query: CustomerListQuery,
    page: Page[CustomerRead],
) -> AsyncIterator[bytes]:
    yield csvio.csv_lines([csvio.EXPORT_COLUMNS]).encode()
    while True:
        yield csvio.csv_lines(csvio.export_cells(c) for c in page.data).encode()
        cursor = page.next_cursor
        if not cursor:
            return
        page = await customers.list.remote(principal, query.model_copy(update={"cursor": cursor}))
