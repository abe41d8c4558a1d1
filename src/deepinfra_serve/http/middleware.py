"""The outermost ASGI middleware: the request's record (its id, and its route, classified here
once from the path), the in-flight gauge, and, once the last byte is sent, the request's
metrics and its access-log line.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: it must see the end of a streamed
response (not just its headers), and it adds nothing per streamed frame: the table's routes
note their status and send the request id themselves, and only FastAPI's `send` is wrapped.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..observability import metrics
from ..observability.logs import access_log
from ..observability.record import RequestRecord, bind, request_id_from, source_from, unbind
from .routes import TABLE


class _Series:
    """One API's labelled metric children, looked up once rather than on every request."""

    __slots__ = ("billing", "e2e", "in_flight", "itl", "requests", "ttft")

    def __init__(self, model: str, api: str) -> None:
        self.in_flight = metrics.IN_FLIGHT.labels(model, api)
        self.e2e = metrics.E2E.labels(model, api)
        self.ttft = metrics.TTFT.labels(model, api)
        self.itl = metrics.ITL.labels(model, api)
        self.billing = metrics.billing(model, api)
        self.requests: dict[tuple[int, str], Any] = {}


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, model: str, log_content: bool = False) -> None:
        self.app = app
        self.model = model
        self.log_content = log_content
        self._series: dict[str, _Series] = {}

    def _of(self, api: str) -> _Series:
        series = self._series.get(api)
        if series is None:
            series = self._series[api] = _Series(self.model, api)
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = source = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                header = value
            elif name == b"x-deepinfra-source":
                source = value
        record = RequestRecord(
            request_id=request_id_from(header.decode("latin-1") if header else None),
            model=self.model,
            route=TABLE.classify(scope["path"]),
            capture_content=self.log_content,
            source=source_from(source),
        )
        token = bind(record, scope)
        api = record.api
        series = self._of(api) if api else None
        try:
            if record.route is None:  # FastAPI's
                await self.app(scope, receive, _with_id(send, record))
            elif series is None:
                await self.app(scope, receive, send)
            else:
                # A route of the table, which notes its status and sends the request id itself
                # (`responses.response_start`): its frames go to the server unwrapped.
                series.in_flight.inc()
                try:
                    await self.app(scope, receive, send)
                finally:
                    series.in_flight.dec()
        finally:
            unbind(token)
            if series is not None:
                self._account(record, scope, series)

    def _account(self, record: RequestRecord, scope: Scope, series: _Series) -> None:
        ended = time.perf_counter()
        model, api = self.model, record.api
        latency = ended - record.started
        status = record.status
        key = (status, record.finish_reason or "none")
        counter = series.requests.get(key)
        if counter is None:
            counter = series.requests[key] = metrics.REQUESTS.labels(
                model, api, str(key[0]), key[1]
            )
        counter.inc()
        series.e2e.observe(latency)
        usage = record.usage
        tier = record.tier.name
        if record.first_token_at is not None:
            series.ttft.observe(record.first_token_at - record.started)
            metrics.child(metrics.TIER_TTFT, model, tier).observe(
                record.first_token_at - record.started
            )
            if usage.completion_tokens > 1:
                series.itl.observe((ended - record.first_token_at) / (usage.completion_tokens - 1))
        series.billing.bill(usage)
        if usage.estimated_cost:
            metrics.child(metrics.TIER_COST, model, tier).inc(usage.estimated_cost)
        record.accounted = True
        line: dict[str, Any] = {
            "request_id": record.request_id,
            "model": model,
            "api": api,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "prompt_tokens": usage.prompt_tokens,
            "cached_tokens": usage.cached_tokens,
            "completion_tokens": usage.completion_tokens,
            "finish_reason": record.finish_reason,
            "latency_ms": round(latency * 1000, 1),
            "ttft_ms": (
                round((record.first_token_at - record.started) * 1000, 1)
                if record.first_token_at is not None
                else None
            ),
            "estimated_cost": usage.estimated_cost,
            "service_tier": tier,
            "user": record.user,
            "source": record.source,
        }
        if record.content is not None:
            line["content"] = record.content
        access_log.write(line)


def _with_id(send: Send, record: RequestRecord) -> Send:
    rid_header = (b"x-request-id", record.request_id.encode())

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            record.status = message["status"]
            message["headers"] = [*message.get("headers", []), rid_header]
        await send(message)

    return send_with_id
