"""Prometheus metrics of the API layer, labelled by model and API.

vLLM's own engine metrics (running and waiting requests, KV-cache usage, queue time, ...) are
registered by its stat logger in the same default registry, so /metrics exports both without
re-implementing either.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from ..config.pricing import Pricing, Usage

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    20,
    40,
    80,
    160,
    320,
    640,
)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5)

REQUESTS = Counter(
    "deepinfra_requests",
    "API requests by status code and finish reason of the first choice ('none': did not run).",
    ["model", "api", "status", "finish_reason"],
)
# Gauges say how the API processes of one server combine (prometheus_client's multiprocess
# mode; ignored with one process).
IN_FLIGHT = Gauge(
    "deepinfra_requests_in_flight",
    "API requests being served.",
    ["model", "api"],
    multiprocess_mode="livesum",
)
TTFT = Histogram(
    "deepinfra_time_to_first_token_seconds",
    "Time from request arrival to the first streamed token (streaming requests).",
    ["model", "api"],
    buckets=_LATENCY_BUCKETS,
)
E2E = Histogram(
    "deepinfra_e2e_request_latency_seconds",
    "Time from request arrival to the last byte of the response.",
    ["model", "api"],
    buckets=_LATENCY_BUCKETS,
)
ITL = Histogram(
    "deepinfra_inter_token_latency_seconds",
    "Mean time between generated tokens, one observation per request of 2 or more tokens.",
    ["model", "api"],
    buckets=_ITL_BUCKETS,
)
PROMPT_TOKENS = Counter("deepinfra_prompt_tokens", "Prompt tokens billed.", ["model", "api"])
CACHED_PROMPT_TOKENS = Counter(
    "deepinfra_prompt_cached_tokens",
    "Prompt tokens read from the engine's prefix cache (part of the prompt tokens), billed at "
    "the cache-read price.",
    ["model", "api"],
)
PRICE = Gauge(
    "deepinfra_price_usd_per_mtok",
    "The card's prices, USD per million tokens, by kind (input, cache_read, output): what "
    "caching saved is cached tokens x (input - cache_read) / 10^6.",
    ["model", "kind"],
    multiprocess_mode="max",
)
GENERATION_TOKENS = Counter(
    "deepinfra_generation_tokens",
    "Generated tokens billed (end-of-sequence included).",
    ["model", "api"],
)
COST = Counter("deepinfra_estimated_cost_usd", "Estimated cost billed, in USD.", ["model", "api"])
ENGINE_READY = Gauge(
    "deepinfra_engine_ready",
    "1 when the engine serves, 0 while loading, draining or dead.",
    ["model"],
    multiprocess_mode="livemin",
)


class Billing:
    """One API's token and cost counters, looked up once: the middleware bills each request
    through it, and a webhook job whose usage settles after its HTTP request ended too."""

    __slots__ = ("cached", "cost", "generation", "prompt")

    def __init__(self, model: str, api: str) -> None:
        self.prompt = PROMPT_TOKENS.labels(model, api)
        self.cached = CACHED_PROMPT_TOKENS.labels(model, api)
        self.generation = GENERATION_TOKENS.labels(model, api)
        self.cost = COST.labels(model, api)

    def bill(self, usage: Usage) -> None:
        if usage.prompt_tokens:
            self.prompt.inc(usage.prompt_tokens)
            cached = usage.cached_tokens
            if cached:
                self.cached.inc(cached)
        if usage.completion_tokens:
            self.generation.inc(usage.completion_tokens)
        if usage.estimated_cost:
            self.cost.inc(usage.estimated_cost)


_billing: dict[tuple[str, str], Billing] = {}


def billing(model: str, api: str) -> Billing:
    found = _billing.get((model, api))
    if found is None:
        found = _billing[(model, api)] = Billing(model, api)
    return found


WEBHOOK_DELIVERIES = Counter(
    "deepinfra_webhook_deliveries",
    "Webhook jobs by whether their result (succeeded or failed) reached the webhook.",
    ["model", "delivered"],
)
WEBHOOKS_CUT_SHORT = Counter(
    "deepinfra_webhook_generations_cut_short",
    "Webhook generations stopped by shutdown and delivered as failed.",
    ["model"],
)
ENGINE_LAST_PROGRESS = Gauge(
    "deepinfra_engine_last_progress_timestamp_seconds",
    "Unix time the engine last returned outputs (checked while it has work).",
    ["model"],
    multiprocess_mode="livemax",
)
OPEN_CONNECTIONS = Gauge(
    "deepinfra_open_connections",
    "Client connections the server holds (bounded by its connection limit).",
    ["model"],
    multiprocess_mode="livesum",
)
REFUSED_CONNECTIONS = Counter(
    "deepinfra_refused_connections",
    "Connections answered 503 and closed because the server held its limit of connections.",
    ["model"],
)
READ_TIMEOUTS = Counter(
    "deepinfra_request_read_timeouts",
    "Requests whose headers or body did not arrive within the read timeout (408, closed).",
    ["model", "stage"],
)


TIER_REQUESTS = Counter(
    "deepinfra_tier_requests",
    "Generation requests by the service tier applied and what admission did: admitted, or "
    "why not (rate_limited: the key's limit; model_busy; flex_timeout; shutting_down).",
    ["model", "tier", "outcome"],
)
ADMISSION_WAIT = Histogram(
    "deepinfra_admission_wait_seconds",
    "Time from a request's arrival to its admission (flex: its wait for idle capacity).",
    ["model", "tier"],
    buckets=_LATENCY_BUCKETS,
)
FLEX_WAITING = Gauge(
    "deepinfra_flex_waiting_requests",
    "service_tier flex requests waiting for idle capacity.",
    ["model"],
    multiprocess_mode="livesum",
)
TIER_TTFT = Histogram(
    "deepinfra_tier_time_to_first_token_seconds",
    "Time from request arrival to the first streamed token, by service tier.",
    ["model", "tier"],
    buckets=_LATENCY_BUCKETS,
)
TIER_COST = Counter(
    "deepinfra_tier_estimated_cost_usd",
    "Estimated cost billed, in USD, by service tier (its price multiplier applied).",
    ["model", "tier"],
)

# Traffic served through a LoRA adapter (also counted under its base `model` everywhere else).
# Its label set is bounded: the card's adapters and at most the card's `lora.max_added`.
ADAPTER_REQUESTS = Counter(
    "deepinfra_adapter_requests",
    "Requests served through a LoRA adapter, by adapter.",
    ["model", "adapter"],
)
ADAPTER_TOKENS = Counter(
    "deepinfra_adapter_tokens",
    "Tokens of requests served through a LoRA adapter: prompt (cached ones included), "
    "cached and completion.",
    ["model", "adapter", "kind"],
)
ADAPTER_COST = Counter(
    "deepinfra_adapter_estimated_cost_usd",
    "Estimated cost billed, in USD, for requests served through a LoRA adapter.",
    ["model", "adapter"],
)

BATCH_LINES = Counter(
    "deepinfra_batch_lines",
    "Batch lines this replica ended: done, failed, or stopped while running (cancelled, expired).",
    ["model", "state"],
)
BATCH_LINES_YIELDED = Counter(
    "deepinfra_batch_lines_yielded",
    "Batch lines stopped to make way for online requests and handed back to run again.",
    ["model"],
)
# The store's view, the same on every replica of a model: aggregate with max, not sum.
BATCH_OPEN_LINES = Gauge(
    "deepinfra_batch_open_lines",
    "Lines of the model's batches waiting to run or running, on any replica.",
    ["model", "state"],
    multiprocess_mode="max",
)
BATCH_OLDEST_WAITING = Gauge(
    "deepinfra_batch_oldest_waiting_seconds",
    "Age of the oldest batch with a line waiting to run (0: none waits): what an autoscaler reads.",
    ["model"],
    multiprocess_mode="max",
)
BATCHES = Gauge(
    "deepinfra_batches",
    "The model's batches in the store, by status.",
    ["model", "status"],
    multiprocess_mode="max",
)
BATCH_STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
)


class BatchGauges:
    def __init__(self, model: str) -> None:
        self.waiting = BATCH_OPEN_LINES.labels(model, "waiting")
        self.running = BATCH_OPEN_LINES.labels(model, "running")
        self.oldest = BATCH_OLDEST_WAITING.labels(model)
        self.statuses = {s: BATCHES.labels(model, s) for s in BATCH_STATUSES}
        for state in ("done", "failed", "cancelled", "expired"):
            BATCH_LINES.labels(model, state)  # exported from the start, at 0
        BATCH_LINES_YIELDED.labels(model)

    def publish(
        self, waiting: int, running: int, oldest_s: float | None, by_status: dict[str, int]
    ) -> None:
        self.waiting.set(waiting)
        self.running.set(running)
        self.oldest.set(oldest_s or 0.0)
        for status, gauge in self.statuses.items():
            gauge.set(by_status.get(status, 0))


def batch_gauges(model: str) -> BatchGauges:
    return BatchGauges(model)


_children: dict[tuple[object, ...], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once."""
    key = (metric, *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def tier_outcome(model: str, tier: str, outcome: str) -> Any:
    return child(TIER_REQUESTS, model, tier, outcome)


def publish_prices(model: str, pricing: Pricing) -> None:
    PRICE.labels(model, "input").set(pricing.input_usd_per_mtok)
    PRICE.labels(model, "cache_read").set(pricing.cache_read)
    PRICE.labels(model, "output").set(pricing.output_usd_per_mtok)


def exposition() -> tuple[bytes, str]:
    """The /metrics page: this process's registry, or with several API processes the sum of
    what each wrote to the shared directory (vLLM's engine metrics included)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
