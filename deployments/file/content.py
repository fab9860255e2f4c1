"""Pure helpers of the File service: byte ranges, safe filenames, content types.
No I/O here; unit-tested in tests/unit/test_files.py."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote

MAX_FILENAME = 255
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_SPACES = re.compile(r"\s+")
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
DEFAULT_TYPE = "application/octet-stream"
# Types a browser would render inline as active content from our origin: served as
# attachments always, and never trusted from the client when the bytes disagree.
_ACTIVE = {"text/html", "application/xhtml+xml", "image/svg+xml", "text/javascript"}

# Leading bytes -> media type, for the types worth recognising.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
)


class RangeNotSatisfiable(Exception):
    """The Range header names no byte of the file (HTTP 416)."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range a `Range` header asks for, clipped to the file; None for
    no header, a header we ignore (another unit, several ranges, malformed: RFC 9110
    lets a server send the whole file then). Raises `RangeNotSatisfiable` for a range
    that starts past the end or a zero-length suffix."""
    if header is None:
        return None
    found = _RANGE.match(header)
    if not found:
        return None  # multi-range or garbage: serve the full content
    first, last = found[1], found[2]
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable(header)
    end = size - 1 if not last else min(int(last), size - 1)
    if end < start:
        return None  # an invalid range-spec: ignore the header
    return ByteRange(start, end)


def sanitise_filename(name: str | None) -> str:
    """A filename safe to store and to send back: the last path segment, NFC, without
    control or path characters, no leading dots, at most 255 UTF-8 bytes, keeping the
    extension when it has to shorten; "file" when nothing is left."""
    if not name:
        return "file"
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name)
    name = _SPACES.sub(" ", name).strip().lstrip(".").strip()
    if not name or set(name) <= {"_", " "}:
        return "file"
    if len(name.encode()) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = f".{ext}" if dot and stem and len(ext.encode()) <= 16 else ""
        stem = name[: -len(ext)] if ext else name
        budget = MAX_FILENAME - len(ext.encode())
        stem = stem.encode()[:budget].decode("utf-8", "ignore")
        name = stem + ext
    return name


def content_type_for(declared: str | None, head: bytes) -> str:
    """The type to store: what the leading bytes prove, else the client's declared
    type when it is a well-formed media type that is not active content, else
    `application/octet-stream`."""
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    if declared:
        media_type = declared.split(";", 1)[0].strip().lower()
        if _MEDIA_TYPE.match(media_type) and media_type not in _ACTIVE:
            if media_type.startswith("text/"):
                return f"{media_type}; charset=utf-8" if _is_utf8(head) else DEFAULT_TYPE
            return media_type
    return DEFAULT_TYPE


def _is_utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut at the end of the sample
    return b"\x00" not in head


def content_disposition(filename: str, inline: bool = False) -> str:
    """`attachment; filename="..."; filename*=UTF-8''...` (RFC 6266), ASCII fallback."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    fallback = fallback.replace('"', "_").replace("\\", "_")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
