"""One place for every port, path and secret, read from `NEXTFLOW_*` variables.

`StackSettings` is what the local stack needs to start servers; `Settings` adds the
secrets the application needs and refuses to start without them. The local stack
generates the secrets once into `<data_dir>/secrets.env` and hands them to Ray, so
every Serve replica and actor reads the same values from its environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_PREFIX = "NEXTFLOW_"


def _default_data_dir() -> Path:
    # PostgreSQL runs as the `postgres` user when we are root, and it cannot enter
    # /root; a root install therefore keeps its data under /var/lib.
    if os.geteuid() == 0:
        return Path("/var/lib/nextflow")
    return Path.home() / ".local" / "share" / "nextflow"


@dataclass(frozen=True)
class ServerAddress:
    name: str
    host: str
    port: int


class StackSettings(BaseSettings):
    """Ports, paths and sizes; nothing secret."""

    model_config = SettingsConfigDict(env_prefix=_PREFIX, extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"

    # PostgreSQL: one catalog server (shard_map, auth, product) and N shard servers.
    pg_user: str = "nextflow"
    catalog_port: int = 55432
    shard_servers: int = Field(default=5, ge=1, le=64)
    shard_base_port: int = 55433
    logical_shards: int = Field(default=10, ge=1, le=1024)

    # Every PostgreSQL server has a streaming replica on its port + this offset.
    replica_port_offset: int = Field(default=100, ge=1)
    # False: asynchronous streaming (a commit is on the primary's disk; a failover may
    # lose what had not streamed yet). True: a commit also waits until one standby has
    # written it (`ANY 1 (*)`, `remote_write`); with no standby connected, commits wait.
    synchronous_replicas: bool = False
    # Automatic failover (cluster/watchdog.py, a Ray actor `nextflow up` starts): a
    # shard server's primary that answers no probe for this long is fenced and its
    # standby promoted, as `nextflow shards failover` does it; 0 turns it off (a person
    # runs the command; on Kubernetes the PostgreSQL operator fails over). With
    # asynchronous replicas a standby whose received WAL is further than
    # `failover_max_lag_bytes` behind the primary's last position seen is not promoted:
    # what to lose is then a person's decision.
    failover_after_s: float = Field(default=6.0, ge=0)
    failover_max_lag_bytes: int = Field(default=1 << 20, ge=0)

    redis_port: int = 56379

    # Where the servers are when they do not all run on `host` (Kubernetes: a Service
    # per PostgreSQL cluster). `{server}` becomes the server's name (`catalog`,
    # `shard1`, ...); with a template every server listens on its own host, so shard
    # servers all use `shard_base_port` and a replica its primary's port.
    server_host_template: str | None = None  # e.g. "nextflow-{server}-rw"
    replica_host_template: str | None = None  # e.g. "nextflow-{server}-ro"
    redis_host: str | None = None

    # Ray: every port explicit, so two stacks (yours and the tests') never collide.
    ray_gcs_port: int = 56380
    ray_dashboard_port: int = 8265
    ray_client_port: int = 56381
    ray_dashboard_agent_port: int = 56382
    ray_metrics_port: int = 56383
    # Prometheus (`nextflow up --monitoring`); the Ray dashboard reads its metrics here.
    prometheus_port: int = 56386
    ray_num_cpus: int | None = None
    # How long Ray keeps a task worker process that has nothing to do (Ray's own default
    # is 1 s). AI and analytics work runs as Ray tasks (a report, a lexical search, the
    # search backlog's round every few seconds): with 1 s, nearly every such call started
    # a fresh Python worker first (1.8-2.7 s for a search after 3 s of quiet, against
    # 0.1 s warm), and the backlog's rounds kept starting and stopping them (about a
    # third of a core on an idle 2-core stack). Set on every node (`ray start`'s
    # environment; kuberay/base/rayservice.yaml sets the same).
    ray_idle_worker_keep_s: float = Field(default=300.0, ge=1)
    ai_resource: float = 1.0
    # Analytics and AI Ray tasks (ai/runtime.py): what each one asks
    # for. With `ai_resource` 1.0 on the head, 4 tasks run at once at 0.25 each.
    ai_task_num_cpus: float = Field(default=0.25, gt=0)
    ai_task_resource: float = Field(default=0.25, gt=0)
    # Bulk import: a file of more than one chunk is parsed in Ray tasks, this many at
    # once (each reserving `import_task_num_cpus`); 0 parses in the replica's thread.
    # Unset: half the cluster's CPUs (at most 8) from 4 CPUs on, else 0 (on 2 cores the
    # tasks only add their hand-over to the same CPU time: docs/imports.md).
    import_parsers: int | None = Field(default=None, ge=0, le=64)
    import_task_num_cpus: float = Field(default=0.25, gt=0)
    # Reports (deployments/analytics) are cached in Redis this long, and dropped
    # earlier when an event changes what they count.
    report_cache_ttl_s: float = Field(default=300.0, ge=0)
    # Batch lead scoring: leads per Ray task, and tasks in flight per job.
    ai_score_batch_size: int = Field(default=500, ge=1)
    ai_tasks_in_flight: int = Field(default=8, ge=1)
    # Semantic search (ai/embed.py): "auto" embeds records and queries when
    # the optional `ai` extra is installed; "off" keeps search lexical (BM25) only.
    ai_embeddings: Literal["auto", "off"] = "auto"
    # Threads the embedding model computes with, per call (two calls may run at once).
    ai_embed_threads: int = Field(default=1, ge=1, le=64)
    # Records per indexing task (a search-index rebuild, or one event's records).
    ai_index_batch_size: int = Field(default=500, ge=1)
    # How long the indexer waits for more events after a read that brought fewer than
    # a full batch: writes' documents are that much later in search, and the indexing
    # tasks (one per logical shard and kind of a batch) fewer and larger.
    ai_index_linger_ms: int = Field(default=1000, ge=0, le=60_000)
    # A bulk import's records are indexed for words at once and embedded later by the
    # embedding backlog: one AIService replica at a time (a Redis lease) looks this
    # often for documents without an embedding (0: never; the reindex job still embeds).
    ai_embed_backlog_interval_s: float = Field(default=5.0, ge=0)
    serve_http_port: int = 8000
    # Serve's gRPC ingress (`grpc_options` in serve_config.yaml; the nextflow.v1 API).
    serve_grpc_port: int = 9000
    # Serve's ingress. Measured in docs/benchmarks.md: HAProxy in front of the Gateway
    # replicas plus throughput-optimized mode serves 2-3x the default proxy actor.
    serve_ingress: Literal["haproxy", "proxy"] = "haproxy"
    serve_throughput_optimized: bool = True
    haproxy_stats_port: int = 56384
    haproxy_metrics_port: int = 56385
    # Slow clients at the HAProxy ingress (cluster/haproxy_guard.py): the whole request
    # head within `ingress_header_timeout_s`; a connection whose client sends nothing
    # for `ingress_client_timeout_s` (mid-request or mid-answer) is closed. HAProxy's
    # stats page and metrics listen on `ingress_admin_host` only.
    ingress_header_timeout_s: int = Field(default=10, ge=1, le=3600)
    ingress_client_timeout_s: int = Field(default=60, ge=1, le=86400)
    ingress_admin_host: str = "127.0.0.1"
    # How often Serve's controller asks each ingress (the HAProxy manager, or a proxy
    # actor) whether it is alive, and how long an answer may take; three failures in
    # a row and it is replaced. With Ray's default (10 s) a killed HAProxy was replaced
    # ~25 s later; at 0.5 s the ingress answered again 4.7 s after a kill -9
    # (docs/reliability.md). A check is one call to the manager: negligible.
    ingress_health_check_period_s: float = Field(default=0.5, gt=0)
    ingress_health_check_timeout_s: float = Field(default=3.0, gt=0)

    # Pools: every ShardManager actor owns one pool per database, capped here.
    pool_min_size: int = 1
    pool_max_size: int = Field(default=8, ge=1, le=200)

    # Replica reads: a replica further behind than this (or down) is skipped.
    max_replica_lag_s: float = Field(default=5.0, gt=0)
    replica_poll_interval_s: float = Field(default=0.2, gt=0)
    # Caller-side batching of ShardManager calls (shards.client.ManagerLink): batches
    # out at once per manager and process (0: every call its own actor call), and the
    # most calls one batch carries.
    shard_batch_in_flight: int = Field(default=4, ge=0, le=64)
    shard_batch_max: int = Field(default=64, ge=1, le=1000)

    def shard_server_addresses(self) -> list[ServerAddress]:
        if self.server_host_template is not None:
            return [
                ServerAddress(name, self.server_host_template.format(server=name), port)
                for name, port in (
                    (f"shard{i + 1}", self.shard_base_port) for i in range(self.shard_servers)
                )
            ]
        return [
            ServerAddress(f"shard{i + 1}", self.host, self.shard_base_port + i)
            for i in range(self.shard_servers)
        ]

    def catalog_address(self) -> ServerAddress:
        host = self.host
        if self.server_host_template is not None:
            host = self.server_host_template.format(server="catalog")
        return ServerAddress("catalog", host, self.catalog_port)

    def replica_address(self, primary: ServerAddress) -> ServerAddress:
        """Where `primary`'s first streaming replica runs (local stack: port + offset)."""
        name = f"{primary.name}-replica"
        if self.replica_host_template is not None:
            host = self.replica_host_template.format(server=primary.name)
            return ServerAddress(name, host, primary.port)
        return ServerAddress(name, primary.host, primary.port + self.replica_port_offset)

    @property
    def secrets_file(self) -> Path:
        return self.data_dir / "secrets.env"

    @property
    def ray_address(self) -> str:
        return f"{self.host}:{self.ray_gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.ray_dashboard_port}"

    @property
    def serve_url(self) -> str:
        return f"http://{self.host}:{self.serve_http_port}"

    @property
    def serve_grpc_target(self) -> str:
        """Where a gRPC client connects (`grpc.insecure_channel(...)`)."""
        return f"{self.host}:{self.serve_grpc_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_host or self.host}:{self.redis_port}/0"


class Settings(StackSettings):
    """Everything a replica or actor needs, secrets included (no defaults for them)."""

    pg_password: SecretStr
    jwt_secret: SecretStr = Field(min_length=32)
    # Seals secrets the databases must keep readable (webhook signing secrets:
    # deployments/_kit/sealed.py). To rotate: the old key into `secrets_key_previous`,
    # a new one here; replicas reseal what they find at start.
    secrets_key: SecretStr = Field(min_length=32)
    secrets_key_previous: SecretStr | None = None
    jwt_issuer: str = "nextflow"
    jwt_audience: str = "nextflow-api"
    access_token_ttl_s: int = Field(default=900, ge=30)
    refresh_token_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)

    # Gateway rate limits (GCRA in Redis): a sustained rate and a burst, per caller.
    rate_limit_enabled: bool = True
    rate_limit_per_minute: int = Field(default=6000, ge=1)
    rate_limit_burst: int = Field(default=300, ge=1)
    # Without Redis the limiter cannot decide: let requests through (true: an outage of
    # the limiter is not an outage of the API) or refuse them with 503 + Retry-After.
    rate_limit_fail_open: bool = True
    login_limit_per_minute: int = Field(default=20, ge=1)
    login_limit_burst: int = Field(default=10, ge=1)
    # Public lead capture (`POST /capture/{form_key}`, no token): limited per form and
    # per client address. The address is the socket peer; only when the peer is one of
    # `trusted_proxies` (comma-separated CIDRs: "10.0.0.0/8,::1") is `X-Forwarded-For` read,
    # from the right, skipping trusted hops (its left part is whatever the client sent).
    capture_form_limit_per_minute: int = Field(default=600, ge=1)
    capture_form_limit_burst: int = Field(default=100, ge=1)
    capture_client_limit_per_minute: int = Field(default=30, ge=1)
    capture_client_limit_burst: int = Field(default=10, ge=1)
    trusted_proxies: str = ""

    # Hardening (docs/security.md). `Idempotency-Key` responses are kept this long.
    # A request that runs longer than `request_timeout_s` is answered 504 (its work
    # may still finish). JSON bodies above `max_body_bytes` are refused with 413
    # (file uploads and imports have their own caps below). CORS is closed unless
    # origins are listed (comma-separated); `hsts_max_age_s` > 0 sends
    # Strict-Transport-Security (only behind TLS).
    idempotency_retention_s: float = Field(default=24 * 3600.0, ge=60)
    # How long an ingress trusts an API key it checked (revocation is at once, through
    # Redis; a deactivated owner or a changed role within this time).
    api_key_cache_ttl_s: float = Field(default=10.0, ge=0)
    request_timeout_s: float = Field(default=25.0, gt=0)  # under Serve's 30 s
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    cors_allowed_origins: str = ""
    hsts_max_age_s: int = Field(default=0, ge=0)

    # Traces (cluster/tracing.py): off unless an exporter is named. OTLP over HTTP
    # (Jaeger: http://<host>:4318) and/or a folder of JSON-lines span files.
    otel_endpoint: str | None = None
    otel_spans_dir: Path | None = None
    otel_sampling_ratio: float = Field(default=0.1, ge=0, le=1)
    otel_service_name: str = "nextflow"

    # Support: how often each SupportService replica stores SLA breach flags (0: never;
    # reads still show the live breach state).
    sla_sweep_interval_s: float = Field(default=30.0, ge=0)
    # Activities: how often each CustomerService replica sends the task reminders that
    # are due (0: never). A reminder goes out within about this long of its time.
    activity_reminder_interval_s: float = Field(default=15.0, ge=0)
    # Likely duplicates: how often a CustomerService replica writes the match keys of
    # the records an import (once it ended) or a rebuild queued (0: never).
    duplicate_keys_backlog_interval_s: float = Field(default=2.0, ge=0)

    # Notification e-mail over SMTP: off while no host is set. `smtp_tls`: "none",
    # "starttls" (upgrade on the submission port) or "tls" (implicit TLS, port 465).
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_from: str = "NextFlow <no-reply@nextflow.local>"
    smtp_tls: Literal["none", "starttls", "tls"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    # The server's certificate is always verified: against the system's CAs, or only
    # the CAs in this PEM file (an internal relay with its own CA).
    smtp_ca_file: Path | None = None
    # How long a NotificationService replica reuses the list of managers it asked the
    # Auth service for (SLA breach notices go to them); a new manager is included at
    # the latest this much later.
    notification_directory_ttl_s: float = Field(default=60.0, ge=0)

    # Ticket summaries by a chat model: any OpenAI-compatible endpoint (`POST
    # <ai_chat_url>/chat/completions`: OpenAI, vLLM, llama.cpp's server, Ollama...).
    # Unset: summaries are extractive, computed here. When the endpoint fails or times
    # out, the summary falls back to the extractive one and says so.
    ai_chat_url: str | None = None
    ai_chat_model: str = "gpt-4o-mini"
    ai_chat_api_key: SecretStr | None = None
    ai_chat_timeout_s: float = Field(default=20.0, gt=0)

    # Outbound webhooks. Targets on private, loopback, link-local, multicast or
    # reserved addresses are refused unless `webhook_allow_private` or the target is
    # inside `webhook_allowed_cidrs` (comma-separated, e.g. "10.1.0.0/16,::1/128").
    # Retries: exponential from `webhook_retry_base_s` up to `webhook_retry_cap_s`
    # per wait, plus jitter, for at least `webhook_retry_horizon_s` in all.
    webhook_allow_private: bool = False
    webhook_allowed_cidrs: str = ""
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_retry_base_s: float = Field(default=30.0, gt=0)
    webhook_retry_cap_s: float = Field(default=4 * 3600.0, gt=0)
    webhook_retry_horizon_s: float = Field(default=24 * 3600.0, gt=0)
    webhook_poll_interval_s: float = Field(default=2.0, ge=0)

    # Files (deployments/file): the upload size cap, checked while the body streams in,
    # and the blob store. Content goes to a local folder (default `<data_dir>/files`:
    # one machine, or a volume every gateway and FileService replica mounts) unless an
    # S3-compatible endpoint is named; then it goes to `s3_bucket` there.
    file_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    file_store_dir: Path | None = None
    s3_endpoint: str | None = None
    s3_bucket: str = "nextflow-files"
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    # Each FileService replica removes, every interval (0: never), blobs older than
    # `file_orphan_age_s` that no file row refers to (a crash between storing a blob
    # and committing its metadata) and partial uploads as old.
    file_orphan_sweep_interval_s: float = Field(default=900.0, ge=0)
    file_orphan_age_s: float = Field(default=3600.0, gt=0)

    # Bulk CSV imports (`POST /imports/customers`): the largest upload accepted.
    import_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    # Records in one import (a job with more fails before writing anything), and the
    # imports one user may have queued or running at once (more: 429).
    import_max_rows: int = Field(default=5_000_000, ge=1)
    import_max_running_per_user: int = Field(default=2, ge=1)
    # CSV exports (`POST /v1/integration/exports/customers`, jobs): each one's file is
    # kept in the blob store this long after it ended, then removed by the integration
    # replicas' sweep, every interval (0: never). The running limit is the imports'.
    export_keep_s: float = Field(default=86_400.0, gt=0)
    export_sweep_interval_s: float = Field(default=600.0, ge=0)

    # Events (shards/relay.py, deployments/_kit/consumer.py): each server's relay looks
    # for unsent outbox rows when a write commits there, at most every
    # `outbox_poll_interval_s`, and every `outbox_idle_poll_s` with no write; how many it
    # publishes per database per pass;
    # sent rows are deleted after `outbox_retention_s`, consumers' processed-event marks
    # after `processed_events_retention_s` (keep it longer than any redelivery can take);
    # the stream is trimmed to about `event_stream_maxlen` entries.
    # The consumer groups of the event stream (a JSON list in the environment): every outbox relay
    # makes sure they exist before it publishes, so an event written before a
    # service's first replica was up waits for it. Each service's consumer names its
    # group (deployments/_kit/events.py); a new consumer's group is added here.
    event_consumer_groups: tuple[str, ...] = (
        "notification", "webhooks", "analytics", "ai", "customer",
    )  # fmt: skip
    outbox_poll_interval_s: float = Field(default=0.25, gt=0)
    outbox_idle_poll_s: float = Field(default=5.0, gt=0)
    outbox_batch_size: int = Field(default=500, ge=1, le=10000)
    outbox_retention_s: float = Field(default=7 * 24 * 3600, ge=0)
    outbox_cleanup_interval_s: float = Field(default=300.0, gt=0)
    processed_events_retention_s: float = Field(default=30 * 24 * 3600, ge=0)
    event_stream_maxlen: int = Field(default=1_000_000, ge=1000)

    # The local Redis has no password; a shared one (Kubernetes) does.
    redis_password: SecretStr | None = None

    @property
    def redis_url(self) -> str:
        url = super().redis_url
        if self.redis_password is None:
            return url
        password = quote(self.redis_password.get_secret_value(), safe="")
        return url.replace("redis://", f"redis://:{password}@", 1)

    def dsn_for(self, host: str, port: int, database: str) -> str:
        password = self.pg_password.get_secret_value()
        return f"postgresql://{self.pg_user}:{password}@{host}:{port}/{database}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once per process from the environment)."""
    return Settings()  # type: ignore[call-arg]  # secrets come from the environment
