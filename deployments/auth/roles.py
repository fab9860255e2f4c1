"""What a role's record scopes and hidden fields may be set to over the API.

A scope only means something for a permission the services check record by record
(`Principal.owners(...)` in their code), and only for a permission the role has. A
hidden field is answered as null: it must be nullable in its read model, and no
list filter may answer questions about it (a filter on a hidden e-mail would tell it,
record by record); the fields below are those whose filters are guarded or absent.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.principal import Scope

SCOPEABLE = frozenset({
    "customer:read", "customer:write", "customer:delete",
    "contact:read", "contact:write", "contact:delete",
    "deal:read", "deal:write", "deal:delete",
    "order:read", "order:write", "order:delete",
    "lead:read", "lead:write", "lead:delete", "lead:convert",
    "campaign:read", "campaign:write", "campaign:delete",
    "ticket:read", "ticket:write", "ticket:delete",
    "activity:read", "activity:write", "activity:delete",
    "report:read",
})  # fmt: skip
HIDEABLE: Mapping[str, frozenset[str]] = {
    "customer": frozenset({"email", "phone"}),
    "contact": frozenset({"email", "phone"}),
    "lead": frozenset({"email", "phone"}),
}


def problems(
    permissions: frozenset[str],
    scopes: Mapping[str, Scope] | None,
    hidden: Mapping[str, list[str]] | None,
) -> list[dict[str, str]]:
    """Why the update cannot apply (validation errors), or nothing."""
    errors = []
    for permission in scopes or {}:
        field = f"scopes.{permission}"
        if permission not in SCOPEABLE:
            scopeable = ", ".join(sorted(SCOPEABLE))
            errors.append(_error(field, f"not a record-level permission; one of {scopeable}"))
        elif permission not in permissions:
            errors.append(_error(field, "the role does not have this permission"))
    for kind, fields in (hidden or {}).items():
        field = f"hidden_fields.{kind}"
        allowed = HIDEABLE.get(kind)
        if allowed is None:
            errors.append(_error(field, f"fields can be hidden of: {', '.join(HIDEABLE)}"))
            continue
        for name in fields:
            if name not in allowed:
                which = ", ".join(sorted(allowed))
                errors.append(_error(field, f"{name!r} cannot be hidden; these can: {which}"))
    return errors


def _error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}
