"""Bulk CSV import and CSV export (both jobs), and jobs, under `/v1/integration` (the
integration application's prefix). Path: this file -> deployments/integration/service.py
-> repo.py (jobs), the customer shards (import) and the customer application (the
export's pages, through a Serve handle)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import FileResponse, Response, StreamingResponse

from cluster.settings import get_settings
from deployments.customer.schemas import CustomerListQuery
from deployments.integration.privacy import PrivacyExport
from deployments.integration.repo import JobAccepted, JobRead
from deployments.integration.service import IntegrationService, upload_dir
from gateway.context import CurrentPrincipal, json, list_params, service
from gateway.listing import query_parameters
from gateway.openapi import BINARY, request_body
from gateway.uploads import TooLarge, save_upload

router = APIRouter(tags=["imports"])
Service = Annotated[IntegrationService, Depends(service)]
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]


_CSV_UPLOAD = request_body(
    {
        "multipart/form-data": {
            "type": "object",
            "required": ["file"],
            "properties": {"file": BINARY},
        },
        "text/csv": BINARY,
    },
    "The CSV file: a form's `file` part, or the whole body.",
)


@router.post(
    "/imports/customers", status_code=202, response_model=JobAccepted, openapi_extra=_CSV_UPLOAD
)
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


_PAGE = {"limit", "cursor", "count"}  # an export is every page, counted
_EXPORT_FILTERS = query_parameters(CustomerListQuery, without=_PAGE)


@router.post(
    "/exports/customers",
    status_code=202,
    response_model=JobAccepted,
    openapi_extra=_EXPORT_FILTERS,
)
async def export_customers(request: Request, principal: CurrentPrincipal, svc: Service) -> Response:
    """Export, as a job, every customer the filters of `GET /v1/customers` (and `sort`)
    select, as the caller may see them. Answers `202` with the job to poll
    (`Location`); its `progress` counts the rows written of the `total`, and once it
    has succeeded its `result` has `rows`, `bytes` and `file_url`
    (`GET /v1/integration/jobs/{id}/file`), kept `NEXTFLOW_EXPORT_KEEP_S` (24 h).
    A bad filter is a `422` here, a caller without `customer:read` a `403`. Cells a
    spreadsheet would run as formulas start with `'`."""
    query = await list_params(request, CustomerListQuery, without=_PAGE)
    accepted = await svc.start_customer_export(principal, query)
    return json(accepted, 202, headers={"Location": accepted.status_url})


@router.post(
    "/privacy/exports",
    status_code=202,
    response_model=JobAccepted,
    responses={404: {"description": "No such person (or one the caller may not read)"}},
)
async def export_person(body: PrivacyExport, principal: CurrentPrincipal, svc: Service) -> Response:
    """Export, as a job, everything NextFlow holds about one person (GDPR access and
    portability): `{"type": "customer" | "contact" | "lead", "record_id": "..."}`. Needs
    `privacy:export` (admins). Answers `202` with the job to poll (`Location`); once it
    has succeeded its `result` has `bytes` and `file_url`, a ZIP: `manifest.json`
    (who asked, when, what each part counts), one JSON document per part (the
    record and its history; a customer's contacts, activities, deals, orders,
    tickets with their histories, stage changes and comments; the notifications any
    user received about the person) and `files/<id>-<name>` for every attached
    file's content. Kept `NEXTFLOW_EXPORT_KEEP_S` (24 h). A person the caller may
    not read, or that does not exist, is a 404 here."""
    accepted = await svc.start_privacy_export(principal, body.type, body.record_id)
    return json(accepted, 202, headers={"Location": accepted.status_url})


@router.get(
    "/jobs/{job_id}/file",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/csv": {"schema": BINARY}, "application/zip": {"schema": BINARY}},
            "description": "The CSV of a customers' export, the ZIP of a privacy export.",
        }
    },  # fmt: skip
)
async def job_file(job_id: JobId, principal: CurrentPrincipal, svc: Service) -> Response:
    """A succeeded export's file (`409` while it runs; `404` for another kind of job,
    one that failed or was cancelled, or a file already removed)."""
    key, size, media_type, name = await svc.export_file(principal, job_id)
    assert svc.store is not None
    return StreamingResponse(
        svc.store.open_range(key, 0, size - 1),
        media_type=media_type,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )
