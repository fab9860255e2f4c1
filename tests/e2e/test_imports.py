"""Bulk CSV import jobs, CSV export and `nextflow import` against the session's stack."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from ray import serve
from ray.util.state import list_tasks

from cluster.settings import Settings
from deployments._kit.events import EVENT_STREAM, Event
from deployments.integration.repo import JobAccepted
from deployments.integration.service import CHUNK
from gateway.principal import Principal
from tests.e2e.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.e2e
NEXTFLOW = str(Path(sys.executable).with_name("nextflow"))


def _import(http: httpx.Client, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    started = http.post(
        "/v1/integration/imports/customers",
        headers=headers,
        files={"file": ("c.csv", body, "text/csv")},
    )
    assert started.status_code == 202, started.text
    accepted = started.json()
    assert accepted["status_url"] == f"/v1/integration/jobs/{accepted['job_id']}"
    return _wait(http, headers, accepted["status_url"])


def _wait(http: httpx.Client, headers: dict[str, str], url: str) -> dict[str, Any]:
    """The job at `url` once it has ended."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(url, headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job still {job['status']}")


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def _tagged(http: httpx.Client, headers: dict[str, str], tag: str) -> dict[str, dict[str, Any]]:
    page = http.get("/v1/customers", headers=headers, params={"tag": tag, "limit": 200}).json()
    return {c["external_id"] or c["name"]: c for c in page["data"]}


def test_bad_rows_are_reported_by_line_and_the_rest_imported(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    tag = "imp" + os.urandom(3).hex()
    body = _csv([
        ["name", "email", "tags", "external_id"],
        ["Good One", "one@example.com", f"{tag};vip", f"{tag}-1"],
        ["", "x@example.com", tag, f"{tag}-2"],              # line 3: no name
        ["Bad Mail", "not-an-email", tag, f"{tag}-3"],       # line 4
        ["Good Two", "", tag, f"{tag}-4"],
        ["Twice", "", tag, f"{tag}-1"],                      # line 6: external id again
        ["No Ext", "", tag, ""],
    ])  # fmt: skip
    job = _import(http, admin, body)
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"done": 6, "total": 6}
    result = job["result"]
    assert (result["created"], result["updated"], result["failed"]) == (3, 0, 3)
    imported = _tagged(http, admin, tag)
    assert set(imported) == {f"{tag}-1", f"{tag}-4", "No Ext"}
    assert imported[f"{tag}-1"]["tags"] == [tag, "vip"]

    errors = http.get(f"/v1/integration/jobs/{job['id']}/errors", headers=admin)
    assert errors.status_code == 200 and errors.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(errors.text)))
    assert lines[0][:2] == ["line", "error"]
    by_line = {row[0]: row[1] for row in lines[1:]}
    assert set(by_line) == {"3", "4", "6"}
    assert "name" in by_line["3"] and "email" in by_line["4"] and "line 2" in by_line["6"]


def test_awkward_values_arrive_exactly_as_written(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    """What COPY reads is CSV the service writes: quotes, commas, line breaks,
    backslashes, braces and non-ASCII text in names and tags arrive unchanged, and
    in the history; a NUL (which PostgreSQL text cannot hold) fails only its row."""
    tag = "imp" + os.urandom(3).hex()
    names = {
        f"{tag}-1": 'Quote "Q", comma',
        f"{tag}-2": "Two\nlines\r\nand \\N",
        f"{tag}-3": "\\. {braces} 'single' ;semi",
        f"{tag}-4": "Đà Nẵng Trading — 株式会社",
    }
    odd_tags = ['say "hi"', "back\\slash", "{curly}", "NULL"]
    body = _csv(
        [["name", "website", "tags", "external_id"]]
        + [[name, "", ";".join([tag, *odd_tags]), ext] for ext, name in names.items()]
        + [["Has \x00 NUL", "", tag, f"{tag}-5"]]
    )
    job = _import(http, admin, body)
    assert job["status"] == "succeeded", job
    assert (job["result"]["created"], job["result"]["failed"]) == (4, 1), job
    imported = _tagged(http, admin, tag)
    assert {ext: c["name"] for ext, c in imported.items()} == names
    for customer in imported.values():
        assert customer["tags"] == [tag, *odd_tags] and customer["website"] is None
        history = http.get(f"/v1/customers/{customer['id']}/history", headers=admin).json()["data"]
        assert history[-1]["changes"]["name"] == [None, customer["name"]]
        assert history[-1]["changes"]["tags"] == [None, [tag, *odd_tags]]
    errors = http.get(f"/v1/integration/jobs/{job['id']}/errors", headers=admin)
    (error,) = list(csv.reader(io.StringIO(errors.text)))[1:]
    assert error[0] == "8" and "NUL" in error[1]  # a file line: the second name spans 3


def test_a_file_of_several_chunks_is_parsed_in_ray_tasks(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    """More than one chunk: chunks are parsed in Ray tasks, two at once, and a row
    repeating a key from an earlier chunk (or from a chunk parsed at the same time) is
    still an error of its line; a record with a quoted line break is never cut."""
    tag = "imp" + os.urandom(3).hex()
    n = CHUNK * 2 + 300
    rows = [["name", "email", "tags", "external_id"]]
    rows += [[f"Bulk {i}", f"b{i}@example.com", tag, f"{tag}-{i}"] for i in range(n)]
    rows[CHUNK] = ["Two\nlines", "", tag, f"{tag}-{CHUNK - 2}"]  # a chunk's last record
    rows.insert(CHUNK + 5, ["Repeat", "", tag, f"{tag}-3"])  # chunk 2 repeats chunk 1
    rows.insert(2 * CHUNK + 7, ["Bad", "not-an-email", tag, f"{tag}-bad"])
    rows.append(["Repeat 2", "", tag, f"{tag}-{CHUNK + 20}"])  # chunk 3 repeats chunk 2
    body = _csv(rows)
    lines = body.decode().split("\n")  # file lines: the quoted line break is one too
    line_of = {name: lines.index(next(x for x in lines if x.startswith(name))) + 1
               for name in ("Repeat,", "Bad,", "Repeat 2,")}  # fmt: skip

    job = _import(http, admin, body)
    assert job["status"] == "succeeded", job
    result = job["result"]
    # rows[CHUNK] replaced a row and took the external id of the row before it: a repeat.
    assert (result["rows"], result["failed"]) == (n + 3, 4), result
    assert result["created"] == n - 1
    errors = http.get(f"/v1/integration/jobs/{job['id']}/errors", headers=admin)
    by_line = {int(r[0]): r[1] for r in list(csv.reader(io.StringIO(errors.text)))[1:]}
    assert by_line[line_of["Repeat,"]] == "external_id: already on line 5"
    assert "email" in by_line[line_of["Bad,"]]
    assert by_line[line_of["Repeat 2,"]].startswith("external_id: already on line")
    assert any(m == f"external_id: already on line {CHUNK}" for m in by_line.values())
    assert list(by_line) == sorted(by_line)
    # The job's writes are not the caller's own (no read-your-writes positions): a
    # replica may still be replaying 40,000 rows when the job reports success.
    deadline = time.monotonic() + 30
    while True:
        count = {"tag": tag, "count": "true", "limit": 1}
        total = http.get("/v1/customers", headers=admin, params=count).json()["total"]
        if total == n - 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert total == n - 1

    # The chunks were parsed in Ray tasks (found by name: the list may be truncated).
    deadline, names = time.monotonic() + 30, set()
    while time.monotonic() < deadline and not any(x.endswith("parse_chunk") for x in names):
        tasks = list_tasks(
            address=serve_app.ray_address,
            filters=[("name", "=", "parse_chunk")],
            limit=100,
            raise_on_missing_output=False,
        )
        names = {t.name for t in tasks}
        time.sleep(0.5)
    assert any(x.endswith("parse_chunk") for x in names), names


def test_the_same_file_twice_changes_nothing_and_a_changed_row_is_updated(
    http: httpx.Client, admin: dict[str, str], serve_app: Settings
) -> None:
    tag = "imp" + os.urandom(3).hex()
    rows = (
        [["name", "phone", "tags", "external_id"]]
        + [[f"Cust {i}", f"+4912345{i}", tag, f"{tag}-{i}"] for i in range(30)]
        # Without an external id a row is known by its values.
        + [[f"Plain {i}", "", tag, ""] for i in range(3)]
    )
    stream = redis.Redis.from_url(serve_app.redis_url)
    first = _import(http, admin, _csv(rows))
    assert first["result"]["created"] == 33, first
    before = _tagged(http, admin, tag)
    assert len(before) == 33

    second = _import(http, admin, _csv(rows))
    assert second["status"] == "succeeded"
    counts = {k: second["result"][k] for k in ("created", "updated", "unchanged", "failed")}
    assert counts == {"created": 0, "updated": 0, "unchanged": 33, "failed": 0}
    after = _tagged(http, admin, tag)
    assert {k: (c["id"], c["version"], c["updated_at"]) for k, c in after.items()} == {
        k: (c["id"], c["version"], c["updated_at"]) for k, c in before.items()
    }

    rows[5][0] = "Cust 4 renamed"  # external id {tag}-4
    rows.append(["Plain 0", "", tag, ""])  # the same values as an earlier line
    third = _import(http, admin, _csv(rows))
    assert (third["result"]["created"], third["result"]["updated"]) == (0, 1), third
    assert third["result"]["failed"] == 1
    changed = _tagged(http, admin, tag)[f"{tag}-4"]
    assert changed["name"] == "Cust 4 renamed" and changed["id"] == before[f"{tag}-4"]["id"]
    assert changed["version"] == before[f"{tag}-4"]["version"] + 1

    # History as any other write records it, with the changed fields.
    history = http.get(f"/v1/customers/{changed['id']}/history", headers=admin).json()["data"]
    by_action = {h["action"]: h["changes"] for h in history}
    assert by_action["updated"] == {"name": ["Cust 4", "Cust 4 renamed"]}
    assert by_action["created"]["name"] == [None, "Cust 4"]
    assert by_action["created"]["tags"] == [None, [tag]] and "email" not in by_action["created"]

    # One `customer.imported` event per batch names what each job created or updated.
    def imported(job_id: str) -> dict[str, set[str]]:
        named: dict[str, set[str]] = {"created": set(), "updated": set()}
        for _, fields in stream.xrange(EVENT_STREAM, "-", "+"):
            event = Event.model_validate_json(fields[b"event"])
            if event.type == "customer.imported" and event.data["job_id"] == job_id:
                for key in named:
                    named[key] |= set(event.data[key])
        return named

    deadline = time.monotonic() + 20
    while imported(str(third["id"]))["updated"] != {changed["id"]}:
        assert time.monotonic() < deadline, "no customer.imported event for the update"
        time.sleep(0.2)
    assert imported(str(first["id"]))["created"] == {c["id"] for c in before.values()}
    assert imported(str(second["id"])) == {"created": set(), "updated": set()}
    stream.close()


def test_export_is_a_job_whose_file_neutralises_formulas_and_round_trips_quotes(
    ray_driver: None, http: httpx.Client, admin: dict[str, str], agent: dict[str, str]
) -> None:
    tag = "exp" + os.urandom(3).hex()
    names = ["=cmd()", 'Quote "q", comma', "+SUM(1)", "Plain", "Nguyễn Văn Đức"]
    for name in names:
        created = http.post("/v1/customers", headers=admin, json={"name": name, "tags": [tag]})
        assert created.status_code == 201, created.text
    start = http.post(
        "/v1/integration/exports/customers", headers=admin, params={"tag": tag, "sort": "name"}
    )
    assert start.status_code == 202, start.text
    job = _wait(http, admin, start.headers["location"])
    assert job["status"] == "succeeded", job
    assert job["kind"] == "customer_export"
    assert job["progress"] == {"done": 5, "total": 5}
    assert job["result"]["rows"] == 5
    download = http.get(job["result"]["file_url"], headers=admin)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert int(download.headers["content-length"]) == job["result"]["bytes"]
    assert 'filename="customers-' in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.content.decode())))
    assert [r["name"] for r in rows] == sorted(
        ["'=cmd()", 'Quote "q", comma', "'+SUM(1)", "Plain", "Nguyễn Văn Đức"]
    )
    assert all(r["tags"] == tag for r in rows)
    # Only its owner (or an admin) sees the job and its file.
    assert http.get(job["result"]["file_url"], headers=agent).status_code == 404

    # Refused before a job exists: a bad filter or sort, no customer:read.
    bad = http.post("/v1/integration/exports/customers", headers=admin, params={"sort": "nope"})
    assert bad.status_code == 422
    assert (
        http.post(
            "/v1/integration/exports/customers", headers=admin, params={"colour": "red"}
        ).status_code
        == 422
    )
    # An import has no file to download.
    done = _import(http, admin, _csv([["name"], ["One"]]))
    assert http.get(f"/v1/integration/jobs/{done['id']}/file", headers=admin).status_code == 404

    # Files are kept for a while (NEXTFLOW_EXPORT_KEEP_S), then removed; the job stays.
    integration = serve.get_app_handle("integration")
    assert integration.remove_old_exports.remote(0.0).result(timeout_s=60) >= 1
    gone = http.get(job["result"]["file_url"], headers=admin)
    assert gone.status_code == 404 and "removed" in gone.json()["detail"]
    kept = http.get(start.headers["location"], headers=admin).json()
    assert kept["status"] == "succeeded" and kept["result"]["file_removed"] is True


def test_who_may_import_and_what_is_refused_at_upload(
    http: httpx.Client, admin: dict[str, str], viewer: dict[str, str]
) -> None:
    body = _csv([["name"], ["Nope"]])
    refused = http.post("/v1/integration/imports/customers", headers=viewer,
                        files={"file": ("c.csv", body, "text/csv")})  # fmt: skip
    assert refused.status_code == 403
    for bad in (b"colour,name\nred,x\n", b"\xff\xfe\x00n\x00a\x00m\x00e\n", b""):
        answer = http.post("/v1/integration/imports/customers", headers=admin,
                           files={"file": ("c.csv", bad, "text/csv")})  # fmt: skip
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert http.get("/v1/integration/jobs/999999999", headers=admin).status_code == 404


def test_too_many_records_or_imports_at_once_are_refused_at_upload(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    """More records than NEXTFLOW_IMPORT_MAX_ROWS (100,000 in the test stack) is a 422 at
    upload; a third import while two of the caller's are queued or running is a 429."""
    raw = {**admin, "Content-Type": "text/csv"}
    big = b"name\n" + b"".join(b"R%d\n" % i for i in range(100_001))
    refused = http.post("/v1/integration/imports/customers", headers=raw, content=big)
    assert refused.status_code == 422, refused.text
    assert "100,001 records" in refused.json()["detail"]

    tag = "cap" + os.urandom(3).hex()
    body = _csv([["name", "tags", "external_id"]]
                + [[f"C {i}", tag, f"{tag}-{i}"] for i in range(90_000)])  # fmt: skip
    urls = []
    for _ in range(2):
        started = http.post("/v1/integration/imports/customers", headers=raw, content=body)
        assert started.status_code == 202, started.text
        urls.append(started.json()["status_url"])
    third = http.post(
        "/v1/integration/imports/customers", headers=raw, content=_csv([["name"], ["Later"]])
    )
    assert third.status_code == 429, third.text
    assert third.headers["retry-after"] == "30" and "2 imports" in third.json()["detail"]
    for url in urls:  # ended (cancelled, or done if it was that quick): room again
        http.post(url + "/cancel", headers=admin)
        deadline = time.monotonic() + 60
        while http.get(url, headers=admin).json()["status"] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert _import(http, admin, _csv([["name"], ["Later"]]))["status"] == "succeeded"


def test_a_file_that_stops_being_utf8_fails_the_job_clearly(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    job = _import(http, admin, b"name,industry\nFine,ok\nCaf\xe9 Latin1,food\n")
    assert job["status"] == "failed"
    assert "line 3" in job["error"] and "UTF-8" in job["error"], job


def test_cli_import_prints_the_counts(serve_app: Settings, tmp_path: Path) -> None:
    tag = "cli" + os.urandom(3).hex()
    path = tmp_path / "customers.csv"
    path.write_bytes(_csv([["name", "tags", "external_id"],
                           ["A", tag, f"{tag}-a"], ["", tag, f"{tag}-b"]]))  # fmt: skip
    result = subprocess.run(
        [NEXTFLOW, "import", str(path), "--url", serve_app.serve_url,
         "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD],
        text=True, capture_output=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "created 1" in result.stdout and "failed 1" in result.stdout
    errors = tmp_path / f"customers.errors-{result.stdout.split('errors-')[1].split('.csv')[0]}.csv"
    assert errors.is_file() and "name" in errors.read_text()

    out = tmp_path / "out.csv"
    exported = subprocess.run(
        [NEXTFLOW, "export", "customers", str(out), "--url", serve_app.serve_url,
         "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD, "--filter", f"tag={tag}"],
        text=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert f"{tag}-a" in out.read_text()

    missing = subprocess.run([NEXTFLOW, "import", str(tmp_path / "nope.csv"), "--url",
                              serve_app.serve_url, "--token", "x"],
                             text=True, capture_output=True, timeout=60)  # fmt: skip
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


def test_cancel_stops_a_running_import_and_not_a_finished_one(
    http: httpx.Client, admin: dict[str, str]
) -> None:
    tag = "can" + os.urandom(3).hex()
    body = _csv([["name", "tags", "external_id"]]
                + [[f"C {i}", tag, f"{tag}-{i}"] for i in range(45_000)])  # fmt: skip
    started = http.post(
        "/v1/integration/imports/customers",
        headers={**admin, "Content-Type": "text/csv"},
        content=body,
    )
    assert started.status_code == 202, started.text
    url = started.json()["status_url"]
    cancelled = http.post(url + "/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    deadline = time.monotonic() + 60
    while (job := http.get(url, headers=admin).json())["result"] is None:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "cancelled" and job["result"]["rows"] < 45_000

    done = _import(http, admin, _csv([["name"], ["Quick"]]))
    again = http.post(f"/v1/integration/jobs/{done['id']}/cancel", headers=admin)
    assert again.status_code == 409


def test_import_through_the_handle(
    ray_driver: None, serve_app: Settings, http: httpx.Client, admin: dict[str, str]
) -> None:
    me = http.get("/v1/auth/me", headers=admin).json()
    principal = Principal(user_id=int(me["id"]), role="admin",
                          permissions=frozenset({"customer:read", "customer:write"}))  # fmt: skip
    tag = "hdl" + os.urandom(3).hex()
    upload = serve_app.data_dir / "imports" / f"handle-{tag}.csv"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(_csv([["name", "tags", "external_id"], ["Via Handle", tag, tag]]))
    handle = serve.get_app_handle("integration")
    accepted = handle.start_customer_import.remote(principal, str(upload)).result()
    assert isinstance(accepted, JobAccepted)
    deadline = time.monotonic() + 60
    while (job := handle.get_job.remote(principal, accepted.job_id).result()).status in (
        "queued", "running",
    ):  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job.status == "succeeded" and job.result and job.result["created"] == 1
    assert job.progress.done == job.progress.total == 1
    assert not upload.exists()  # the service owned the upload and removed it
