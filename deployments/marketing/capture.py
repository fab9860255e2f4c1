"""Validation of a public capture payload against its form: strict, because anyone
on the internet can post one. Pure logic, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict

from gateway.errors import Validation

# Largest accepted body (the route refuses more with 413 before parsing).
MAX_BODY_BYTES = 8 * 1024
MAX_LENGTH = {
    "first_name": 100,
    "last_name": 100,
    "email": 254,
    "phone": 50,
    "company": 200,
    "title": 100,
    "message": 2000,
}


class CaptureData(BaseModel):
    """A capture that passed its form's rules; every value cleaned."""

    model_config = ConfigDict(frozen=True)

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None
    title: str | None = None
    message: str | None = None


def parse_capture(
    fields: Sequence[str], required: Sequence[str], payload: Mapping[str, Any]
) -> CaptureData:
    """The payload as `CaptureData`, or a 422 naming every field that is unknown to the
    form, missing, not a string, too long or (the e-mail) not an address."""
    errors: list[dict[str, str]] = []
    values: dict[str, str] = {}
    for name, raw in payload.items():
        if name not in fields:
            errors.append({"field": str(name)[:100], "message": "not a field of this form"})
            continue
        if raw is None:
            continue
        if not isinstance(raw, str):
            errors.append({"field": name, "message": "must be a string"})
            continue
        value = raw.strip()
        if len(value) > MAX_LENGTH[name]:
            errors.append({"field": name, "message": f"at most {MAX_LENGTH[name]} characters"})
            continue
        if any(ord(c) < 32 and c not in "\n\t" for c in value):
            errors.append({"field": name, "message": "control characters are not allowed"})
            continue
        if value:
            values[name] = value
    for name in required:
        if name not in values and not any(e["field"] == name for e in errors):
            errors.append({"field": name, "message": "required"})
    if "email" in values:
        try:
            checked = validate_email(values["email"], check_deliverability=False)
            values["email"] = checked.normalized
        except EmailNotValidError:
            errors.append({"field": "email", "message": "not a valid e-mail address"})
    if errors:
        raise Validation("the capture is invalid", errors)
    return CaptureData(**values)
