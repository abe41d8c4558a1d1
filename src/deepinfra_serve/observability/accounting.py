"""One request's accounting, written once when it ends: its metrics, its dollars, its
usage-ledger entry and its access-log line, whether a client waited for it (the middleware
calls this when the last byte is sent) or not (a webhook job, when its generation has ended).
"""

from __future__ import annotations

import time
from typing import Any

from ..config.pricing import Usage
from . import metrics
from .ledger import Ledger, LedgerEntry
from .logs import access_log
from .record import NO_USAGE, RequestRecord


class _Series:
    """One API's labelled metric children, looked up once rather than on every request."""

    __slots__ = ("billing", "e2e", "itl", "requests", "ttft")

    def __init__(self, model: str, api: str) -> None:
        self.e2e = metrics.E2E.labels(model, api)
        self.ttft = metrics.TTFT.labels(model, api)
        self.itl = metrics.ITL.labels(model, api)
        self.billing = metrics.billing(model, api)
        self.requests: dict[tuple[int, str], Any] = {}


_series: dict[tuple[str, str], _Series] = {}


def account(record: RequestRecord, ledger: Ledger | None = None) -> None:
    """Metrics, dollars, the ledger's entry (handed to `ledger`, when one is kept) and the
    access line of a request that has ended. A request on no metered route (`record.api`
    None) is neither metered nor logged."""
    api = record.api
    if api is None:
        return
    model = record.model
    series = _series.get((model, api))
    if series is None:
        series = _series[(model, api)] = _Series(model, api)
    ended = time.perf_counter()
    latency = ended - record.started
    status = record.status
    key = (status, record.finish_reason or "none")
    counter = series.requests.get(key)
    if counter is None:
        counter = series.requests[key] = metrics.REQUESTS.labels(model, api, str(key[0]), key[1])
    counter.inc()
    series.e2e.observe(latency)
    usage = record.usage if record.billed else NO_USAGE
    tier = record.tier.name
    ttft = None
    if record.first_token_at is not None:
        ttft = record.first_token_at - record.started
        series.ttft.observe(ttft)
        metrics.child(metrics.TIER_TTFT, model, tier).observe(ttft)
        if usage.completion_tokens > 1:
            series.itl.observe((ended - record.first_token_at) / (usage.completion_tokens - 1))
    series.billing.bill(usage)
    if usage.estimated_cost:
        metrics.child(metrics.TIER_COST, model, tier).inc(usage.estimated_cost)
    adapter = None if record.served is None else record.served.adapter
    if adapter is not None:
        _bill_adapter(model, adapter.name, usage)
    if ledger is not None and (usage.prompt_tokens or usage.completion_tokens):
        tenant = record.tenant
        ledger.add(
            LedgerEntry(
                ledger.origin,
                ledger.next_seq(),
                record.request_id,
                record.owner if tenant is None else tenant.owner,
                model,
                None if adapter is None else adapter.name,
                api,
                tier,
                record.via,
                None if record.batch is None else record.batch[0],
                time.time(),
                usage.prompt_tokens,
                usage.cached_tokens,
                usage.completion_tokens,
                round(usage.estimated_cost * 1e12),
            )
        )
    line: dict[str, Any] = {
        "request_id": record.request_id,
        "model": model,
        "api": api,
        "method": record.method,
        "path": record.path,
        "status": status,
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "completion_tokens": usage.completion_tokens,
        "finish_reason": record.finish_reason,
        "latency_ms": round(latency * 1000, 1),
        "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
        "estimated_cost": usage.estimated_cost,
        "service_tier": tier,
        "user": record.user,
        "source": record.source,
    }
    if adapter is not None:
        line["adapter"] = adapter.name
    if record.via != "http":
        line["via"] = record.via
    if record.batch is not None:
        line["batch_id"], line["custom_id"] = record.batch
    if record.content is not None:
        line["content"] = record.content
    trace = record.trace
    if trace is not None:
        line["trace_id"] = trace.trace_id
        trace.end(record, usage, ttft)
    access_log.write(line)


def _bill_adapter(model: str, adapter: str, usage: Usage) -> None:
    metrics.child(metrics.ADAPTER_REQUESTS, model, adapter).inc()
    metrics.child(metrics.ADAPTER_TOKENS, model, adapter, "prompt").inc(usage.prompt_tokens)
    metrics.child(metrics.ADAPTER_TOKENS, model, adapter, "cached").inc(usage.cached_tokens)
    metrics.child(metrics.ADAPTER_TOKENS, model, adapter, "completion").inc(usage.completion_tokens)
    if usage.estimated_cost:
        metrics.child(metrics.ADAPTER_COST, model, adapter).inc(usage.estimated_cost)
