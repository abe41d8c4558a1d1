"""Admission control in front of the generation APIs: refuse early what the server should not
take on, before anything is parsed or reaches the engine.

- while draining for shutdown: 503 with Retry-After (another replica should take it);
- once the engine is dead or hung: 503 (the process is about to exit and be restarted);
- a body over the size bound: 413; one that does not arrive within the read timeout: 408, and
  the connection is closed; a gzip body is inflated here, within the same bound (`encoding`).

The body is read here (up to the bound) and replayed to the app, so a client cannot get round
the bound by leaving out Content-Length. A request takes its place in the model's capacity
(`capacity`: its key's limit, its tier's share) only once its body is in and valid, in the
dispatcher: a client that sends a body slowly, or never finishes it, holds nothing others
need. The bytes of the bodies still arriving are bounded apart from the slots: a body
that would pass the bound waits, unread (TCP holds its sender back), until others are in,
within its read timeout. Answering it at once would close a connection with unread bytes,
and the kernel's reset could destroy the answer before the client reads it.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine.errors import (
    APIError,
    engine_dead,
    read_timed_out,
    shutting_down,
)
from ..engine.lifecycle import Lifecycle
from ..observability import metrics
from ..observability.record import record_of
from .encoding import TooLarge, decoded
from .lifetime import CLIENT_CLOSED, send_error


class _TooLarge(Exception):
    pass


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: Lifecycle,
        max_body_bytes: int,
        max_pending_body_bytes: int,
        read_timeout_s: float,
        model: str,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.max_body_bytes = max_body_bytes
        self.max_pending = max_pending_body_bytes
        self.read_timeout_s = read_timeout_s
        self.pending = 0  # bytes of the bodies being read in this process
        self._room = asyncio.Event()
        self._late = metrics.READ_TIMEOUTS.labels(model, "body")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = record_of(scope) if scope["type"] == "http" else None
        route = None if record is None else record.route
        if record is None or route is None or not route.admitted:
            await self.app(scope, receive, send)
            return
        lifecycle = self.lifecycle
        family = route.family
        if lifecycle.draining:
            await send_error(send, record, shutting_down(), family)
            return
        if lifecycle.dead:
            await send_error(send, record, engine_dead(), family)
            return
        try:
            # The headers arrived when the record was made; the body has as long again.
            remaining = record.started + self.read_timeout_s - time.perf_counter()
            async with asyncio.timeout(remaining):
                body = await self._read_body(receive)
        except TimeoutError:
            self._late.inc()
            await send_error(send, record, read_timed_out(self.read_timeout_s), family)
            return
        except _TooLarge:
            await send_error(send, record, _too_large(self.max_body_bytes), family)
            return
        if body is None:  # the client went away before sending it all
            record.status = CLIENT_CLOSED
            return
        encoding = next((v for k, v in scope["headers"] if k == b"content-encoding"), None)
        if encoding is not None:
            try:
                body = decoded(body, encoding, self.max_body_bytes)
            except TooLarge:
                await send_error(send, record, _too_large(self.max_body_bytes, "inflated"), family)
                return
            except APIError as err:
                await send_error(send, record, err, family)
                return
        if lifecycle.draining:  # while the body arrived
            await send_error(send, record, shutting_down(), family)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None if the client disconnected first; its bytes count against
        the bound of pending bodies while it arrives."""
        chunks: list[bytes] = []
        size = held = 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise _TooLarge
                while self.pending and self.pending + len(chunk) > self.max_pending:
                    self._room.clear()
                    await self._room.wait()  # until another body is in (or gone)
                self.pending += len(chunk)
                held += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        finally:
            if held:
                self.pending -= held
                self._room.set()


def _too_large(limit: int, how: str = "") -> APIError:
    what = f" ({how})" if how else ""
    return APIError(
        413, f"Request body{what} is larger than {limit} bytes", code="request_too_large"
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later reads wait for the disconnect, as the app expects

    return replayed
