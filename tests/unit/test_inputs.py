"""Request bodies (`gateway.inputs`): every route's body model refuses unknown fields and
non-finite numbers, and a PATCH tells "left out" from "null", refusing null for every
field that cannot be empty, with the field's name, before anything runs."""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import deployments
from deployments.customer.schemas import CustomerCreate, CustomerUpdate
from deployments.marketing.schemas import LeadCreate, LeadUpdate
from gateway.inputs import Input, Patch, admits_none
from gateway.listing import ListQuery


def _routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI's lazy include
        if included is not None:
            yield from _routes(included.routes)


def _bodies() -> dict[str, type[BaseModel]]:
    """Every request body model of every service's routes, by route."""
    found: dict[str, type[BaseModel]] = {}
    for package in pkgutil.iter_modules(deployments.__path__):
        try:
            module = importlib.import_module(f"deployments.{package.name}.routes")
        except ModuleNotFoundError:
            continue
        routers = getattr(module, "routers", None) or [module.router]
        for router in routers:
            for route in _routes(router.routes):
                for param in route.dependant.body_params:
                    model = param.field_info.annotation
                    if typing.get_origin(model) in (typing.Union, types.UnionType):
                        (model,) = [a for a in typing.get_args(model) if a is not type(None)]
                    key = f"{package.name} {sorted(route.methods)} {route.path}"
                    found[key] = model
    return found


def _errors(model: type[BaseModel], body: dict[str, Any]) -> list[Any]:
    try:
        model.model_validate(body)
    except ValidationError as exc:
        return list(exc.errors())
    return []


BODIES = _bodies()
PATCHES = sorted({m for m in BODIES.values() if isinstance(m, type) and issubclass(m, Patch)},
                 key=lambda m: m.__qualname__)  # fmt: skip


def test_every_body_is_an_input() -> None:
    """Unknown (server-owned) fields and NaN/Infinity are refused by every body."""
    assert len(BODIES) >= 40, sorted(BODIES)
    for route, model in BODIES.items():
        assert isinstance(model, type) and issubclass(model, Input | ListQuery), route
        assert model.model_config.get("extra") == "forbid", route
        assert model.model_config.get("allow_inf_nan") is False, route


def test_every_update_route_takes_a_patch() -> None:
    updates = {r: m for r, m in BODIES.items() if "'PATCH'" in r}
    assert len(updates) >= 17, sorted(updates)
    for route, model in updates.items():
        assert issubclass(model, Patch), route
    assert len(PATCHES) >= 17


@pytest.mark.parametrize("model", PATCHES, ids=lambda m: m.__qualname__)
def test_null_is_refused_for_each_field_that_cannot_be_empty(model: type[Patch]) -> None:
    creates = model.creates
    for name in model.model_fields:
        if creates is not None and name in creates.model_fields and model.nullable is None:
            # Derived from the create model: what it requires or defaults to a value
            # cannot be emptied later.
            assert (name in model.never_null) == (not admits_none(creates.model_fields[name]))
        errors = _errors(model, {name: None})
        nulls = [e for e in errors if e["type"] == "not_null"]
        if name in model.never_null:
            assert [e["loc"] for e in nulls] == [(name,)], errors
            assert f"{name} cannot be null" in nulls[0]["msg"]
        else:  # taken, or refused for another reason (a lead's e-mail never changes)
            assert nulls == [], errors
    if not any(f.is_required() for f in model.model_fields.values()):
        assert model.model_validate({}).model_dump(exclude_unset=True) == {}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_patch_names_every_null_it_refuses(data: st.DataObject) -> None:
    model = data.draw(st.sampled_from(PATCHES))
    sent = data.draw(st.sets(st.sampled_from(sorted(model.model_fields))))
    refused = sorted(sent & model.never_null)
    errors = _errors(model, dict.fromkeys(sent))
    assert [e["loc"][0] for e in errors if e["type"] == "not_null"] == refused
    if not errors:
        kept = model.model_validate(dict.fromkeys(sent))
        assert kept.model_fields_set == sent
        assert all(getattr(kept, name) is None for name in sent)


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]


@pytest.mark.parametrize("number", NON_FINITE)
@pytest.mark.parametrize("model", [CustomerCreate, CustomerUpdate, LeadCreate, LeadUpdate])
def test_custom_fields_refuse_non_finite_numbers_at_any_depth(
    model: type[BaseModel], number: str
) -> None:
    """Python's JSON parser (FastAPI's) reads these; jsonb would keep them as null."""
    base: dict[str, Any] = {"name": "x"} if model is CustomerCreate else {}
    if model is LeadCreate:
        base = {"email": "a@example.com"}
    for nested in (f'{{"a": {number}}}', f'{{"a": {{"b": [1, {number}]}}}}'):
        body = {**base, "custom_fields": json.loads(nested)}
        with pytest.raises(ValidationError) as refused:
            model.model_validate(body)
        assert "finite" in str(refused.value)
    too_big = {**base, "custom_fields": {"n": 2**64}}
    with pytest.raises(ValidationError, match="64-bit"):
        model.model_validate(too_big)
    fine = model.model_validate({**base, "custom_fields": {"n": 2**63 - 1, "x": 1.5}})
    assert fine.custom_fields == {"n": 2**63 - 1, "x": 1.5}  # type: ignore[attr-defined]


@pytest.mark.parametrize("number", NON_FINITE)
def test_typed_numbers_refuse_non_finite_values(number: str) -> None:
    from deployments.sales.schemas import DealUpdate
    from deployments.support.schemas import SlaPolicyPut

    value = json.loads(number)
    assert not math.isfinite(value)
    with pytest.raises(ValidationError):
        DealUpdate.model_validate({"amount": number})
    with pytest.raises(ValidationError):
        DealUpdate.model_validate({"amount": value})
    fields = SlaPolicyPut.model_fields
    numeric = [n for n, f in fields.items() if f.annotation in (int, float)]
    for name in numeric:
        with pytest.raises(ValidationError):
            SlaPolicyPut.model_validate({name: value})


def test_a_patch_class_with_an_unknown_nullable_field_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown fields"):

        class Broken(Patch, nullable={"nope"}):
            name: str | None = None
