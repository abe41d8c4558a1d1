"""The outermost ASGI middleware: the request's record (its id, and its route, classified here
once from the method and path), the in-flight gauge, and, once the last byte is sent, the
request's accounting (`observability.accounting`).

Pure ASGI rather than Starlette's BaseHTTPMiddleware: it must see the end of a streamed
response (not just its headers), and it adds nothing per streamed frame: the table's routes
note their status and send the request id themselves, and only FastAPI's `send` is wrapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..observability import metrics
from ..observability.accounting import account
from ..observability.ledger import Ledger
from ..observability.record import RequestRecord, bind, request_id_from, source_from, unbind
from .routes import TABLE

if TYPE_CHECKING:  # imported only when tracing is on (`observability.tracing`)
    from ..observability.spans import Tracing


class ObservabilityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        model: str,
        log_content: bool = False,
        ledger: Ledger | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.model = model
        self.log_content = log_content
        self.ledger = ledger
        self.tracing = tracing  # None: tracing is off, and no span is ever started
        self._in_flight: dict[str, Any] = {}

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
            method=scope["method"],
            path=scope["path"],
            route=TABLE.classify(scope["method"], scope["path"]),
            capture_content=self.log_content,
            source=source_from(source),
        )
        token = bind(record, scope)
        api = record.api
        in_flight = None
        if api is not None:
            if self.tracing is not None:
                record.trace = self.tracing.server(record, scope["headers"])
            in_flight = self._in_flight.get(api)
            if in_flight is None:
                in_flight = self._in_flight[api] = metrics.IN_FLIGHT.labels(self.model, api)
        try:
            if record.route is None:  # FastAPI's
                await self.app(scope, receive, _with_id(send, record))
            elif in_flight is None:
                await self.app(scope, receive, send)
            else:
                # A route of the table, which notes its status and sends the request id itself
                # (`responses.response_start`): its frames go to the server unwrapped.
                in_flight.inc()
                try:
                    await self.app(scope, receive, send)
                finally:
                    in_flight.dec()
        finally:
            unbind(token)
            account(record, self.ledger)


def _with_id(send: Send, record: RequestRecord) -> Send:
    rid_header = (b"x-request-id", record.request_id.encode())

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            record.status = message["status"]
            message["headers"] = [*message.get("headers", []), rid_header]
        await send(message)

    return send_with_id
