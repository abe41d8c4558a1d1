"""ASGI middleware: request ids, in-flight gauge, and, once the last byte is sent, the request's
metrics and its access-log line.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: it must see the end of a streamed
response (not just its headers), and it adds nothing per streamed chunk but one comparison.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics
from .context import RequestRecord, bind, request_id_from, unbind

access_log = logging.getLogger("deepinfra_serve.access")

_APIS = (
    ("/v1/openai/chat/completions", "chat"),
    ("/v1/chat/completions", "chat"),
    ("/v1/openai/completions", "completions"),
    ("/v1/completions", "completions"),
    ("/v1/inference/", "inference"),
)


def api_of(path: str) -> str | None:
    for prefix, api in _APIS:
        if path.startswith(prefix):
            return api
    return None


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, model: str, log_content: bool = False) -> None:
        self.app = app
        self.model = model
        self.log_content = log_content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        record = RequestRecord(
            request_id=request_id_from(header.decode("latin-1") if header else None),
            model=self.model,
            api=api_of(scope["path"]),
            capture_content=self.log_content,
        )
        rid_header = (b"x-request-id", record.request_id.encode())
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        token = bind(record)
        if record.api:
            metrics.IN_FLIGHT.labels(self.model, record.api).inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            unbind(token)
            if record.api:
                metrics.IN_FLIGHT.labels(self.model, record.api).dec()
                self._account(record, status, scope)

    def _account(self, record: RequestRecord, status: int, scope: Scope) -> None:
        ended = time.perf_counter()
        model, api = self.model, record.api
        latency = ended - record.started
        metrics.REQUESTS.labels(model, api, str(status), record.finish_reason or "none").inc()
        metrics.E2E.labels(model, api).observe(latency)
        if record.first_token_at is not None:
            metrics.TTFT.labels(model, api).observe(record.first_token_at - record.started)
            if record.completion_tokens > 1:
                itl = (ended - record.first_token_at) / (record.completion_tokens - 1)
                metrics.ITL.labels(model, api).observe(itl)
        if record.prompt_tokens:
            metrics.PROMPT_TOKENS.labels(model, api).inc(record.prompt_tokens)
        if record.completion_tokens:
            metrics.GENERATION_TOKENS.labels(model, api).inc(record.completion_tokens)
        if record.cost:
            metrics.COST.labels(model, api).inc(record.cost)
        line: dict[str, Any] = {
            "request_id": record.request_id,
            "model": model,
            "api": api,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "finish_reason": record.finish_reason,
            "latency_ms": round(latency * 1000, 1),
            "ttft_ms": (
                round((record.first_token_at - record.started) * 1000, 1)
                if record.first_token_at is not None
                else None
            ),
            "estimated_cost": record.cost,
            "user": record.user,
        }
        if record.content is not None:
            line["content"] = record.content
        access_log.info("access", extra=line)
