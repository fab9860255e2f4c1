"""Everything NextFlow holds about one person (a customer, a contact or a lead), as one
ZIP archive: GDPR articles 15 and 20 (access, portability). Run as a job by
`IntegrationService.start_privacy_export`; this module gathers and packs.

The records come from the services that own them, through their deployment handles
(real composition: each answers as its own API would, with its permissions), every
list read to its last page:
- a customer: the record and its history; its contacts and their histories; its
  activities; its deals with their histories and stage changes; its orders with their
  histories; its tickets with their histories and comments; the files attached to it,
  its contacts, deals and tickets, metadata and content; the notifications any user
  received about it, its deals, tickets or activities;
- a contact: the record and its history, its customer's id, its files;
- a lead: the record and its history, its activities, its files, the notifications
  about it.

The archive holds one JSON document per part (`customer.json`, `deals.json`, ...),
`files/<id>-<name>` for each file's content, and `manifest.json` saying who asked,
when, and what each part counts."""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel

from deployments._kit.history import HistoryQuery
from deployments._kit.types import Id
from deployments.customer.activities.schemas import ActivityListQuery
from deployments.customer.schemas import ContactListQuery
from deployments.file.schemas import FileListQuery
from deployments.sales.schemas import DealListQuery, OrderListQuery, StageHistoryQuery
from deployments.support.schemas import CommentListQuery, TicketListQuery
from gateway.inputs import Input
from gateway.listing import ListQuery, Page
from gateway.principal import Principal

Person = Literal["customer", "contact", "lead"]
PAGE = 200


class PrivacyExport(Input):
    """Whose data to export: a customer, a contact or a lead."""

    type: Person
    record_id: Id


Q = TypeVar("Q", bound=ListQuery)


class Handles(Protocol):
    """The services' deployment handles (`deployments/integration/app.py`)."""

    def __getitem__(self, app: str) -> Any: ...


class Blobs(Protocol):
    def open_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]: ...


@dataclass
class Archive:
    """The parts gathered so far, written into a ZIP in a temporary file."""

    path: Path
    zip: zipfile.ZipFile
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, items: Any) -> None:
        self.zip.writestr(name, json.dumps(_plain(items), ensure_ascii=False, indent=1))
        self.counts[name] = len(items) if isinstance(items, list) else 1


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


async def every(call: Callable[[Q], Awaitable[Page[Any]]], query: Q) -> list[Any]:
    """Every item of a paged list, page after page."""
    items: list[Any] = []
    while True:
        page = await call(query)
        items.extend(page.data)
        if not page.next_cursor:
            return items
        query = query.model_copy(update={"cursor": page.next_cursor})


async def gather(
    apps: Handles,
    blobs: Blobs,
    principal: Principal,
    kind: Person,
    person_id: int,
    progress: Callable[[int], Awaitable[None]],
) -> Path:
    """The archive of `kind` `person_id` as a temporary ZIP file (the caller removes
    it); `progress(parts)` after each part. A person the caller may not read is its
    service's NotFound, before anything is gathered."""
    fd, name = tempfile.mkstemp(prefix="nextflow-privacy-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as packed:
            archive = Archive(path, packed)
            files = await {"customer": _customer, "contact": _contact, "lead": _lead}[kind](
                apps, principal, person_id, archive, progress
            )
            for record in files:
                await _file(apps, blobs, principal, archive, record)
            archive.add("files.json", files)
            packed.writestr("manifest.json", json.dumps({
                "subject": {"type": kind, "id": str(person_id)},
                "exported_at": datetime.now(UTC).isoformat(),
                "exported_by": str(principal.user_id),
                "parts": archive.counts,
            }, indent=1))  # fmt: skip
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _h(apps: Handles, app: str, method: str) -> Callable[..., Awaitable[Any]]:
    handle = getattr(apps[app], method)

    async def call(*args: Any) -> Any:
        return await handle.remote(*args)

    return call


async def _customer(
    apps: Handles,
    principal: Principal,
    customer_id: int,
    archive: Archive,
    progress: Callable[[int], Awaitable[None]],
) -> list[Any]:
    async def part(name: str, app: str, method: str, record_id: int, query: Any = None) -> Any:
        """One part: a record (no `query`), a history (`query` "history") or a list."""
        if query is None:
            items = await _h(apps, app, method)(principal, record_id)
        elif query == "history":
            items = await _history(apps, app, method, principal, record_id)
        else:
            items = await _list(apps, app, method, principal, record_id, query)
        archive.add(name, items)
        await progress(len(archive.counts))
        return items

    async def each(name: str, app: str, method: str, records: list[Any], query: Any) -> None:
        """A history (or list) of each record, by its id."""
        found = {}
        for record in records:
            if query == "history":
                found[str(record.id)] = await _history(apps, app, method, principal, record.id)
            else:
                found[str(record.id)] = await _list(apps, app, method, principal, record.id, query)
        archive.add(name, found)
        await progress(len(archive.counts))

    page = PAGE
    await part("customer.json", "customer", "get", customer_id)
    await part("customer-history.json", "customer", "history", customer_id, "history")
    contacts = await part("contacts.json", "customer", "list_contacts", customer_id,
                          ContactListQuery(limit=page))  # fmt: skip
    await each("contact-history.json", "customer", "contact_history", contacts, "history")
    await part("activities.json", "customer", "list_activities", customer_id,
               ActivityListQuery(limit=page))  # fmt: skip
    deals = await part("deals.json", "sales", "list_customer_deals", customer_id,
                       DealListQuery(limit=page))  # fmt: skip
    await each("deal-history.json", "sales", "deal_history", deals, "history")
    await each("deal-stage-changes.json", "sales", "stage_history", deals,
               StageHistoryQuery(limit=page))  # fmt: skip
    orders = await part("orders.json", "sales", "list_customer_orders", customer_id,
                        OrderListQuery(limit=page))  # fmt: skip
    await each("order-history.json", "sales", "order_history", orders, "history")
    tickets = await part("tickets.json", "support", "list_for_customer", customer_id,
                         TicketListQuery(limit=page))  # fmt: skip
    await each("ticket-history.json", "support", "history", tickets, "history")
    await each("ticket-comments.json", "support", "list_comments", tickets,
               CommentListQuery(limit=page))  # fmt: skip
    notes = await _h(apps, "notification", "about")(principal, "customer_id", customer_id)
    archive.add("notifications.json", notes)
    owners = [("customer", customer_id), *(("contact", c.id) for c in contacts),
              *(("deal", d.id) for d in deals), *(("ticket", t.id) for t in tickets)]  # fmt: skip
    return await _files(apps, principal, owners)


async def _contact(
    apps: Handles,
    principal: Principal,
    contact_id: int,
    archive: Archive,
    progress: Callable[[int], Awaitable[None]],
) -> list[Any]:
    archive.add("contact.json", await _h(apps, "customer", "get_contact")(principal, contact_id))
    history = await _history(apps, "customer", "contact_history", principal, contact_id)
    archive.add("contact-history.json", history)
    await progress(len(archive.counts))
    return await _files(apps, principal, [("contact", contact_id)])


async def _lead(
    apps: Handles,
    principal: Principal,
    lead_id: int,
    archive: Archive,
    progress: Callable[[int], Awaitable[None]],
) -> list[Any]:
    archive.add("lead.json", await _h(apps, "marketing", "get_lead")(principal, lead_id))
    archive.add("lead-history.json",
                await _history(apps, "marketing", "lead_history", principal, lead_id))  # fmt: skip
    await progress(len(archive.counts))
    activities = await _list(apps, "customer", "list_lead_activities", principal, lead_id,
                             ActivityListQuery(limit=PAGE))  # fmt: skip
    archive.add("activities.json", activities)
    archive.add("notifications.json", await _h(apps, "notification", "about")(
        principal, "lead_id", lead_id))  # fmt: skip
    await progress(len(archive.counts))
    return await _files(apps, principal, [("lead", lead_id)])


async def _list(
    apps: Handles, app: str, method: str, principal: Principal, record_id: int, query: ListQuery
) -> list[Any]:
    """Every item of `app.method(principal, record_id, query)`, page after page."""
    call = _h(apps, app, method)
    return await every(lambda q: call(principal, record_id, q), query)


async def _history(
    apps: Handles, app: str, method: str, principal: Principal, record_id: int
) -> list[Any]:
    return await _list(
        apps, app, method, principal, record_id, HistoryQuery(limit=PAGE, sort="created_at")
    )


async def _files(apps: Handles, principal: Principal, owners: list[tuple[str, int]]) -> list[Any]:
    found: list[Any] = []
    for owner_type, owner_id in owners:
        query = FileListQuery.model_validate(
            {"limit": PAGE, "owner_type": owner_type, "owner_id": owner_id}
        )
        found += await every(lambda q: _files_page(apps, principal, q), query)
    return found


async def _files_page(apps: Handles, principal: Principal, query: FileListQuery) -> Page[Any]:
    page: Page[Any] = await _h(apps, "file", "list")(principal, query)
    return page


_UNSAFE = re.compile(r"[^\w.\- ]+")


async def _file(
    apps: Handles, blobs: Blobs, principal: Principal, archive: Archive, record: Any
) -> None:
    """A file's content as `files/<id>-<name>`, streamed into the archive."""
    content = await _h(apps, "file", "get_content")(principal, record.id)
    name = _UNSAFE.sub("_", str(record.filename))[:120] or "file"
    with archive.zip.open(f"files/{record.id}-{name}", "w", force_zip64=True) as out:
        if record.size_bytes:
            last = record.size_bytes - 1
            async for chunk in blobs.open_range(content.blob_key, 0, last):
                out.write(chunk)
    archive.counts["files/"] = archive.counts.get("files/", 0) + 1
