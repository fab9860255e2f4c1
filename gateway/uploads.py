"""Streaming an uploaded file to disk with a size cap: a `multipart/form-data` body
(its first file part) or a raw body (`text/csv`). Nothing is held in memory beyond a
chunk, and a body over the cap stops being read at the cap."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from deployments._kit.errors import AppError, BadRequest


class TooLarge(AppError):
    status, slug, title = 413, "too-large", "Upload too large"


_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_FILENAME = re.compile(rb'filename="', re.IGNORECASE)
_HEADERS_MAX = 16_384


def boundary_of(content_type: str) -> bytes | None:
    """The multipart boundary of a Content-Type, or None for a raw upload."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    match = _BOUNDARY.search(content_type)
    if not match:
        raise BadRequest("multipart/form-data without a boundary")
    return match.group(1).encode("latin-1")


class _Writer:
    def __init__(self, out: BinaryIO, cap: int) -> None:
        self.out, self.cap, self.size = out, cap, 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.cap:
            raise TooLarge(f"the file is larger than {self.cap} bytes")
        self.out.write(data)


async def save_upload(chunks: AsyncIterator[bytes], content_type: str, dest: Path, cap: int) -> int:
    """Write the uploaded file to `dest`; its size in bytes."""
    boundary = boundary_of(content_type)
    with dest.open("wb") as out:
        writer = _Writer(out, cap)
        if boundary is None:
            async for chunk in chunks:
                writer.write(chunk)
        else:
            await _multipart_file(chunks, boundary, writer)
        return writer.size


async def _multipart_file(chunks: AsyncIterator[bytes], boundary: bytes, out: _Writer) -> None:
    """The content of the first part that has a filename."""
    delimiter = b"\r\n--" + boundary
    buf = b"\r\n"  # the first delimiter has no CRLF before it
    state = "preamble"
    async for chunk in chunks:
        buf += chunk
        while True:
            if state == "preamble":
                at = buf.find(delimiter)
                if at < 0:
                    buf = buf[-len(delimiter) :]
                    break
                buf, state = buf[at + len(delimiter) :], "headers"
            elif state == "headers":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _HEADERS_MAX:
                        raise BadRequest("multipart part headers too long")
                    break
                headers, buf = buf[:end], buf[end + 4 :]
                state = "file" if _FILENAME.search(headers) else "skip"
            else:  # "file" or "skip": up to the next delimiter
                at = buf.find(delimiter)
                if at < 0:
                    keep = len(delimiter)
                    if state == "file" and len(buf) > keep:
                        out.write(buf[:-keep])
                    buf = buf[-keep:] if len(buf) > keep else buf
                    break
                if state == "file":
                    out.write(buf[:at])
                    return
                buf, state = buf[at + len(delimiter) :], "headers"
    raise BadRequest("no file in the multipart body (send it as a part with a filename)")
