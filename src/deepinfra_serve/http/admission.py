"""Admission control in front of the generation APIs: refuse early what the server should not
take on, before anything is parsed or reaches the engine.

- while draining for shutdown: 503 with Retry-After (another replica should take it);
- once the engine is dead or hung: 503 (the process is about to exit and be restarted);
- a body over the size bound: 413;
- more requests in flight than the bound: 429 "Model busy, retry later" with Retry-After,
  rather than an unbounded queue in front of the engine.

The body is read here (up to the bound) and replayed to the app, so a client cannot get round
the bound by leaving out Content-Length.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine.errors import APIError, engine_dead, model_busy, shutting_down
from ..engine.lifecycle import Lifecycle
from ..observability.record import record_of
from .lifetime import send_error


class AdmissionMiddleware:
    def __init__(
        self, app: ASGIApp, *, lifecycle: Lifecycle, max_in_flight: int, max_body_bytes: int
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.max_in_flight = max_in_flight
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = record_of(scope) if scope["type"] == "http" else None
        route = None if record is None else record.route
        if route is None or not route.admitted:
            await self.app(scope, receive, send)
            return
        lifecycle = self.lifecycle
        family = route.family
        if lifecycle.draining:
            await send_error(send, shutting_down(), family)
            return
        if lifecycle.dead:
            await send_error(send, engine_dead(), family)
            return
        if not lifecycle.admit(self.max_in_flight):
            await send_error(send, model_busy(), family)
            return
        try:
            body = await self._read_body(receive)
            if body is None:
                err = APIError(
                    413,
                    f"Request body is larger than {self.max_body_bytes} bytes",
                    code="request_too_large",
                )
                await send_error(send, err, family)
                return
            await self.app(scope, _replay(body, receive), send)
        finally:
            lifecycle.release()

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
