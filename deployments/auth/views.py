"""What a saved view may say, per object: the list it is a view of (its `ListQuery`,
whose parameters and sorts it may use, checked as the list would check them) and the
record whose fields are its columns. The list routes read views through
deployments/auth/saved.py; this module is the auth service's alone."""

from __future__ import annotations

from pydantic import BaseModel

from deployments.customer.schemas import CustomerListQuery, CustomerRead
from deployments.marketing.schemas import CampaignListQuery, CampaignRead, LeadListQuery, LeadRead
from deployments.product.schemas import ProductListQuery, ProductRead
from deployments.sales.schemas import DealListQuery, DealRead, OrderListQuery, OrderRead
from deployments.support.schemas import TicketListQuery, TicketRead
from gateway.errors import Validation
from gateway.listing import PAGING, ListQuery, parse_list_params

OBJECTS: dict[str, tuple[type[ListQuery], type[BaseModel]]] = {
    "customers": (CustomerListQuery, CustomerRead),
    "deals": (DealListQuery, DealRead),
    "orders": (OrderListQuery, OrderRead),
    "leads": (LeadListQuery, LeadRead),
    "campaigns": (CampaignListQuery, CampaignRead),
    "tickets": (TicketListQuery, TicketRead),
    "products": (ProductListQuery, ProductRead),
}


def stored_filters(
    object_name: str, filters: dict[str, str | list[str]], sort: str | None
) -> list[tuple[str, str]]:
    """A view's filters as the list's query string would carry them, checked as the
    list checks its own (a 422 naming `filters.<parameter>` or `sort`): what a view
    stores, and what `?view=` replays."""
    model, _ = OBJECTS[object_name]
    pairs = [(k, ",".join(v) if isinstance(v, list) else v) for k, v in filters.items()]
    paging = [k for k, _ in pairs if k in PAGING]
    if paging:
        raise Validation(
            "a view keeps filters; sort has its own field, and pages are the request's",
            [{"field": f"filters.{k}", "message": "not a filter"} for k in paging],
        )
    try:
        parse_list_params([*pairs, *([("sort", sort)] if sort else [])], model)
    except Validation as exc:
        errors = [
            {**e, "field": e["field"] if e["field"] == "sort" else f"filters.{e['field']}"}
            for e in exc.errors
        ]
        raise Validation(f"not filters of {object_name}", errors) from None
    return pairs


def check_columns(object_name: str, columns: list[str]) -> list[str]:
    """The columns, each a field of the object's records (422 naming the others)."""
    _, record = OBJECTS[object_name]
    unknown = [c for c in columns if c not in record.model_fields]
    if unknown:
        raise Validation(
            f"not fields of {object_name}",
            [{"field": "columns", "message": f"unknown: {', '.join(unknown)}"}],
        )
    return list(dict.fromkeys(columns))
