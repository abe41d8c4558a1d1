"""Admission control in front of the generation APIs: refuse early what the server should not
take on, before anything is parsed or reaches the engine.

- while draining for shutdown: 503 with Retry-After (another replica should take it);
- a body over the size bound: 413;
- more requests in flight than the bound: 429 "Model busy, retry later" with Retry-After,
  rather than an unbounded queue in front of the engine.

The body is read here (up to the bound) and replayed to the app, so a client cannot get round
the bound by leaving out Content-Length.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, is_native

_API_PREFIXES = (
    "/v1/openai/chat/",
    "/v1/openai/completions",
    "/v1/chat/",
    "/v1/completions",
    "/v1/inference/",
)


@dataclass
class Gate:
    """Shared between the middleware and shutdown: how many API requests are being served
    (until their last byte), and whether new ones are still let in."""

    in_flight: int = 0
    draining: bool = False


class AdmissionMiddleware:
    def __init__(
        self, app: ASGIApp, *, gate: Gate, max_in_flight: int, max_body_bytes: int
    ) -> None:
        self.app = app
        self.gate = gate
        self.max_in_flight = max_in_flight
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_API_PREFIXES):
            await self.app(scope, receive, send)
            return
        gate = self.gate
        if gate.draining:
            await _refuse(
                scope,
                send,
                APIError(
                    503,
                    "Server is shutting down; retry later",
                    type="server_error",
                    code="shutting_down",
                    headers={"Retry-After": "1"},
                ),
            )
            return
        if gate.in_flight >= self.max_in_flight:
            await _refuse(
                scope,
                send,
                APIError(
                    429,
                    "Model busy, retry later",
                    type="rate_limit_error",
                    code="model_busy",
                    headers={"Retry-After": "1"},
                ),
            )
            return
        gate.in_flight += 1
        try:
            body = await self._read_body(receive)
            if body is None:
                await _refuse(
                    scope,
                    send,
                    APIError(
                        413,
                        f"Request body is larger than {self.max_body_bytes} bytes",
                        code="request_too_large",
                    ),
                )
                return
            await self.app(scope, _replay(body, receive), send)
        finally:
            gate.in_flight -= 1

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; the app will see an empty body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later reads wait for the disconnect, as the app expects

    return replayed


async def _refuse(scope: Scope, send: Send, err: APIError) -> None:
    body = orjson.dumps(err.body(is_native(scope["path"])))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (err.headers or {}).items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
