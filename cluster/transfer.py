"""`nextflow import` / `nextflow export`: an HTTP client of the running API (no Ray,
no database): sign in or use a token, upload, poll the job, download."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

POLL_S = 0.5
UPLOAD_CHUNK = 1 << 20


class TransferError(Exception):
    """Something the user can act on; the CLI prints it as one line."""


@dataclass
class Client:
    url: str
    token: str | None = None
    email: str | None = None
    password: str | None = None
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url.rstrip("/"), timeout=self.timeout_s)

    def close(self) -> None:
        self.http.close()

    def headers(self) -> dict[str, str]:
        if self.token is None:
            if not (self.email and self.password):
                raise TransferError("give --token, or --email and --password (or NEXTFLOW_TOKEN)")
            body = self.call("POST", "/v1/auth/login", auth=False,
                             json={"email": self.email, "password": self.password})  # fmt: skip
            self.token = str(body["access_token"])
        return {"Authorization": f"Bearer {self.token}"}

    def call(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        extra: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        headers = {**(self.headers() if auth else {}), **(extra or {})}
        try:
            response = self.http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise TransferError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            raise TransferError(problem(response))
        return response.json() if response.content else None


def problem(response: httpx.Response) -> str:
    try:
        body = response.json()
        detail = body.get("detail") or body.get("title") or response.reason_phrase
        errors = body.get("errors") or []
        extra = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors)
        return f"{response.status_code} {detail}" + (f" ({extra})" if extra else "")
    except ValueError:
        return f"{response.status_code} {response.reason_phrase}"


def upload(client: Client, path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TransferError(f"{path}: no such file")
    with path.open("rb") as f:
        accepted: dict[str, Any] = client.call(
            "POST",
            "/v1/integration/imports/customers",
            content=_chunks(f),
            extra={"Content-Type": "text/csv"},
        )
    return accepted


def _chunks(f: Any) -> Any:
    while chunk := f.read(UPLOAD_CHUNK):
        yield chunk


def wait(
    client: Client, status_url: str, on_progress: Callable[[int, int | None], None]
) -> dict[str, Any]:
    """Poll the job until it ends; its last state."""
    while True:
        job: dict[str, Any] = client.call("GET", status_url)
        on_progress(int(job["progress"]["done"]), job["progress"]["total"])
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(POLL_S)


def start_export(client: Client, params: dict[str, str]) -> dict[str, Any]:
    """Start an export job of the customers the list filters `params` select."""
    accepted: dict[str, Any] = client.call(
        "POST", "/v1/integration/exports/customers", params=params
    )
    return accepted


def download(client: Client, path: str, dest: Path) -> int:
    """Stream a job's file (`path`, its `file_url`) into `dest`; its size in bytes."""
    size = 0
    try:
        with client.http.stream("GET", path, headers=client.headers()) as response:
            if response.status_code >= 400:
                response.read()
                raise TransferError(problem(response))
            with dest.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
    except httpx.HTTPError as exc:
        raise TransferError(f"{client.url}: {type(exc).__name__}: {exc}") from None
    return size
