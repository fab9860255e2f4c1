"""Which databases live where. A new service adds its database name here and a
folder of migrations under `shards/migrations/<name>/`."""

from __future__ import annotations

# Small, unsharded databases on the catalog server.
CATALOG_DATABASES: tuple[str, ...] = (
    "catalog",
    "auth",
    "product",
    "sales_config",
    "support_config",
    "marketing_config",
    "integration",
    "ai",
)
# One database per sharded service on every shard server.
SHARDED_DATABASES: tuple[str, ...] = (
    "customer",
    "sales",
    "marketing",
    "support",
    "file",
    "notification",
)
# Migrations every sharded database gets first (the global id function and the
# change history table).
SHARDED_BASE = "_sharded"
# The tables of each sharded database whose rows belong to the logical shard in
# their id (`shards.ids`), parents first: a shard move copies them in this order
# and deletes in the reverse one (foreign keys). Every row of every table listed
# here has an `id` made by `nextflow_id(<logical shard of the record it belongs to>)`.
SHARDED_TABLES: dict[str, tuple[str, ...]] = {
    "customer": (
        "customers",
        "contacts",
        "activities",
        "record_changes",
        "outbox",
        "search_documents",
        "idempotency_keys",
        "match_keys",
        "duplicate_keys",
    ),
    "sales": (
        "deals",
        "deal_stage_changes",
        "orders",
        "order_lines",
        "record_changes",
        "outbox",
        "idempotency_keys",
    ),
    "marketing": (
        "campaigns",
        "campaign_members",
        "leads",
        "lead_conversions",
        "record_changes",
        "outbox",
        "idempotency_keys",
    ),
    "support": (
        "tickets",
        "ticket_comments",
        "record_changes",
        "outbox",
        "search_documents",
        "idempotency_keys",
    ),
    "file": ("files", "record_changes", "outbox", "idempotency_keys"),
    "notification": (
        "notifications",
        "notification_emails",
        "notification_preferences",
        "record_changes",
        "outbox",
        "idempotency_keys",
    ),
}
