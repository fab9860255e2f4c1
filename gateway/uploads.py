"""A streaming `multipart/form-data` reader: parts come out one at a time as the
request body arrives, a file part's content as an async iterator of chunks, so an
upload is never held in memory (nor spooled to a temporary file, as Starlette's
`request.form()` does). Built on python-multipart's push parser.

    form = MultipartStream(request.headers.get("content-type"), request.stream())
    while (part := await form.next_part()) is not None:
        if isinstance(part, FormField): ...
        else: async for chunk in form.file_data(): ...

    size = await save_upload(request.stream(), content_type, path, cap)  # to a file
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from gateway.errors import AppError, BadRequest, Validation

MAX_FIELD_BYTES = 1024
MAX_FIELDS = 16


@dataclass(frozen=True)
class FormField:
    name: str
    value: str


@dataclass(frozen=True)
class FilePart:
    name: str
    filename: str | None
    content_type: str | None


_Event = tuple[str, object]


_EXTENDED = re.compile(rb"""filename\*\s*=\s*([A-Za-z0-9!#$&+.^_`|~-]+)'[^']*'([^;\s]*)""")


def _extended_filename(disposition: bytes) -> bytes | None:
    """The name in `filename*=charset'lang'percent-encoded` (RFC 5987/8187), which some
    clients send in place of, or beside, a UTF-8 `filename` (it wins then, as in
    RFC 6266); as UTF-8 bytes. None without one, or with a charset we do not know."""
    found = _EXTENDED.search(disposition)
    if found is None:
        return None
    charset = found.group(1).decode("ascii").lower()
    if charset not in ("utf-8", "iso-8859-1"):
        return None
    return unquote_to_bytes(found.group(2)).decode(charset, "replace").encode()


class MultipartStream:
    def __init__(self, content_type: str | None, body: AsyncIterator[bytes]) -> None:
        media_type, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if media_type != b"multipart/form-data" or not boundary:
            raise Validation(
                "send the file as multipart/form-data",
                [{"field": "content-type", "message": "multipart/form-data with a boundary"}],
            )
        self._body = body.__aiter__()
        self._events: deque[_Event] = deque()
        # A part's headers as sent: a file name is UTF-8 (RFC 7578), not Latin-1.
        self._headers: dict[str, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._in_file = False
        self._done = False
        self._fields = 0
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._headers.clear,
                "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": lambda: self._events.append(("part", dict(self._headers))),
                "on_part_data": lambda d, s, e: self._events.append(("data", bytes(d[s:e]))),
                "on_part_end": lambda: self._events.append(("end", None)),
                "on_end": lambda: self._events.append(("done", None)),
            },
        )

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    async def _next_event(self) -> _Event:
        while not self._events:
            try:
                chunk = await self._body.__anext__()
            except StopAsyncIteration:
                raise BadRequest("the multipart body ended early") from None
            try:
                self._parser.write(chunk)
            except MultipartParseError:
                raise BadRequest("the multipart body is malformed") from None
        return self._events.popleft()

    async def next_part(self) -> FormField | FilePart | None:
        """The next part (a small text field read whole, or a file part whose content
        `file_data()` yields), or None after the last one."""
        if self._in_file:
            async for _ in self.file_data():  # skip what the caller did not read
                pass
        while not self._done:
            kind, value = await self._next_event()
            if kind == "done":
                self._done = True
                return None
            if kind != "part":
                continue
            assert isinstance(value, dict)
            disposition = value.get("content-disposition", b"")
            _, options = parse_options_header(disposition)
            name = options.get(b"name", b"").decode("utf-8", "replace")
            filename = _extended_filename(disposition) or options.get(b"filename")
            if filename is not None:
                self._in_file = True
                media_type = value.get("content-type")
                return FilePart(
                    name,
                    filename.decode("utf-8", "replace"),
                    None if media_type is None else media_type.decode("utf-8", "replace"),
                )
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise Validation("too many form fields", [{"field": name, "message": "too many"}])
            return FormField(name, await self._small_value(name))
        return None

    async def _small_value(self, name: str) -> str:
        data = bytearray()
        while True:
            kind, value = await self._next_event()
            if kind == "end":
                break
            if kind == "data":
                assert isinstance(value, bytes)
                data += value
                if len(data) > MAX_FIELD_BYTES:
                    raise Validation(
                        f"form field {name} is too long",
                        [{"field": name, "message": f"at most {MAX_FIELD_BYTES} bytes"}],
                    )
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise Validation(
                f"form field {name} is not UTF-8", [{"field": name, "message": "not UTF-8"}]
            ) from None

    async def file_data(self) -> AsyncIterator[bytes]:
        """The current file part's content, chunk by chunk as the body arrives."""
        while self._in_file:
            kind, value = await self._next_event()
            if kind == "data":
                assert isinstance(value, bytes)
                if value:
                    yield value
            elif kind in ("end", "done"):
                self._in_file = False
                if kind == "done":
                    self._done = True

    async def drain(self, limit: int) -> None:
        """Read and drop up to `limit` more bytes of the body (so a client still
        sending gets our answer rather than a reset connection)."""
        left = limit
        try:
            while left > 0:
                left -= len(await self._body.__anext__())
        except StopAsyncIteration:
            pass


class TooLarge(AppError):
    status, slug, title = 413, "too-large", "Upload too large"


async def save_upload(chunks: AsyncIterator[bytes], content_type: str, dest: Path, cap: int) -> int:
    """Write an uploaded file to `dest` as it arrives: the first file part of a
    `multipart/form-data` body, or a raw body (`text/csv`). Stops reading at `cap`
    bytes (TooLarge). Returns the file's size."""
    size = 0
    with dest.open("wb") as out:

        def write(data: bytes) -> None:
            nonlocal size
            size += len(data)
            if size > cap:
                raise TooLarge(f"the file is larger than {cap} bytes")
            out.write(data)

        if not content_type.lower().startswith("multipart/form-data"):
            async for chunk in chunks:
                write(chunk)
            return size
        form = MultipartStream(content_type, chunks)
        while (part := await form.next_part()) is not None:
            if isinstance(part, FilePart):
                async for chunk in form.file_data():
                    write(chunk)
                return size
    raise BadRequest("no file in the multipart body (send it as a part with a filename)")
