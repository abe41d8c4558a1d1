"""The server's connections: how many it holds, and how long a request may take to arrive.

uvicorn 0.54 bounds neither. A connection that sends half its headers, or half a body, and then
nothing stays open for as long as the client likes (past `timeout_keep_alive`, which only
starts after a response), and its `limit_concurrency` accepts every connection before
answering the ones past it, so a flood still runs the process out of file descriptors. The
public edge of a single-card release has no proxy in front to do it, so the server does what
HAProxy's `maxconn` and `timeout http-request` do in front of a fleet:

- `accept_connections`: the accept loop. It holds at most `max_connections` connections;
  one more is answered 503 in the OpenAI error shape, with Retry-After, and closed (a refusal
  takes a moment, and at most `_REFUSING` run at once: past them the loop stops accepting and
  new connections wait in the kernel's listen queue). With several API processes on one
  socket, a pending connection goes to the process with the fewest open, as vLLM's own accept
  loop (`NoSignalServer`, which this follows) does.
- `with_read_deadline`: uvicorn's protocol, with a deadline on a request's headers: from the
  connection's start, or from the first byte of the next request on a kept-alive connection.
  A late request gets 408 (in the OpenAI shape: its route is not known yet) and the connection
  is closed; a connection that sent nothing is closed. Once the headers are in, the admission
  middleware gives the body as long again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, MutableSequence
from typing import Any

import orjson

from ..engine.errors import APIError, read_timed_out, too_many_connections
from ..observability import metrics
from .families import DEFAULT_FAMILY

log = logging.getLogger(__name__)

_REFUSING = 64  # refusals in progress at once, each lasting at most _REFUSAL_S
_REFUSAL_S = 1.0
_BATCH = 128  # connections taken per wake-up by a process alone on its socket
# A worker with more connections than another leaves a pending connection to the less loaded
# one, rechecking every 1 ms, for up to 5 ms (it may be busy): vLLM's figures.
_DEFER_CHECKS = 5
NOT_ACCEPTING = 2**31 - 1  # the load a process publishes when it does not accept

_REASONS = {408: b"Request Timeout", 503: b"Service Unavailable"}


def raw_response(err: APIError) -> bytes:
    """A whole HTTP/1.1 answer, written straight to a connection no request of which reached
    the app; it closes the connection."""
    body = orjson.dumps(DEFAULT_FAMILY.error_body(err))
    head = [
        b"HTTP/1.1 %d %s" % (err.status, _REASONS[err.status]),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
    ]
    head += [f"{k.lower()}: {v}".encode("latin-1") for k, v in (err.headers or {}).items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class ConnectionCount:
    """The connections one server holds: counted from their accept to their protocol's end,
    awaited by the accept loop when full, published to the peers when several API processes
    share a socket."""

    def __init__(
        self,
        model: str,
        limit: int,
        peer_loads: tuple[MutableSequence[int], int] | None = None,
    ) -> None:
        self.limit = limit
        self.open = 0  # accepted, its protocol started or not yet
        self.refusing = 0
        self.peer_loads = peer_loads
        self.stopped = False
        self.gauge = metrics.OPEN_CONNECTIONS.labels(model)
        self.refused = metrics.REFUSED_CONNECTIONS.labels(model)
        self.late_headers = metrics.READ_TIMEOUTS.labels(model, "headers")
        self._room = asyncio.Event()

    def reserve(self) -> None:
        """A connection accepted: counted from now, before its protocol starts."""
        self.open += 1
        self.publish()

    def closed(self) -> None:
        """A counted connection ended (or never started)."""
        self.open -= 1
        self._room.set()
        self.publish()

    def wake(self) -> None:
        self._room.set()

    @property
    def full(self) -> bool:
        return self.open >= self.limit

    def publish(self) -> None:
        if self.peer_loads is not None and not self.stopped:
            loads, index = self.peer_loads
            loads[index] = self.open

    def stop_publishing(self) -> None:
        """No longer accepting: never the least loaded again."""
        self.stopped = True
        if self.peer_loads is not None:
            loads, index = self.peer_loads
            loads[index] = NOT_ACCEPTING

    def least_loaded(self) -> bool:
        if self.peer_loads is None:
            return True
        loads, index = self.peer_loads
        return loads[index] <= min(loads)

    async def room(self) -> None:
        """Until a connection or refusal ends."""
        self._room.clear()
        await self._room.wait()


def with_read_deadline(
    protocol: type[asyncio.Protocol], timeout_s: float, count: ConnectionCount
) -> type[asyncio.Protocol]:
    """`protocol` (uvicorn's HTTP protocol class), counted by `count`, with a deadline on each
    request's headers."""
    late = raw_response(read_timed_out(timeout_s))
    base: Any = protocol

    class ReadDeadline(base):
        _deadline: asyncio.TimerHandle | None = None
        _partial = False  # bytes of a request whose headers are not all in
        started = False  # from here its end releases its place in the count

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.started = True
            count.gauge.inc()
            self._deadline = self.loop.call_later(timeout_s, self._headers_late)

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            awaiting = cycle is None or cycle.response_complete  # the next request's bytes
            super().data_received(data)
            if self.cycle is not cycle:  # its headers are in (usually with its first bytes)
                if self._deadline is not None:
                    self._deadline.cancel()
                    self._deadline = None
                self._partial = False
            elif awaiting:
                self._partial = True
                if self._deadline is None:
                    self._deadline = self.loop.call_later(timeout_s, self._headers_late)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)
            count.gauge.dec()
            count.closed()

        def _headers_late(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._partial:
                count.late_headers.inc()
                self.transport.write(late)
            self.transport.close()

    return ReadDeadline


async def accept_connections(
    sock: socket.socket, make_protocol: Callable[[], asyncio.Protocol], count: ConnectionCount
) -> None:
    """Accept on `sock` until cancelled, within `count`'s limit."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def track(task: asyncio.Task[None]) -> None:
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        while True:
            if count.full and count.refusing >= _REFUSING:
                await count.room()
                continue
            await _readable(loop, sock)
            count.publish()  # connections closed since the last accept
            for _ in range(_DEFER_CHECKS):
                if count.least_loaded():
                    break
                await asyncio.sleep(0.001)
            # Alone, take what is queued (as asyncio's server does); beside peers, one at a
            # time, so that the next goes to whichever is then least loaded.
            for _ in range(1 if count.peer_loads else _BATCH):
                if count.full and count.refusing >= _REFUSING:
                    break
                try:
                    conn, _ = sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    break  # none left, or another process took it
                except OSError:  # EMFILE and the like: asyncio's server also retries in 1 s
                    log.exception("error accepting a connection")
                    await asyncio.sleep(1)
                    break
                conn.setblocking(False)
                if count.full:
                    count.refusing += 1
                    track(loop.create_task(_refuse(loop, conn, count)))
                    continue
                count.reserve()
                # Its own task, so that a TLS handshake does not hold up the next accept.
                track(loop.create_task(_connect(loop, conn, make_protocol, count)))
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _connect(
    loop: asyncio.AbstractEventLoop,
    conn: socket.socket,
    make_protocol: Callable[[], asyncio.Protocol],
    count: ConnectionCount,
) -> None:
    made: list[Any] = []

    def make() -> asyncio.Protocol:
        made.append(make_protocol())
        return made[-1]

    try:
        await loop.connect_accepted_socket(make, conn)
    except (Exception, asyncio.CancelledError) as exc:
        conn.close()
        if not (made and made[0].started):  # else its end releases its place
            count.closed()
        if isinstance(exc, asyncio.CancelledError):
            raise
        log.debug("an accepted connection failed to start", exc_info=True)


_TOO_MANY = raw_response(too_many_connections())


async def _refuse(
    loop: asyncio.AbstractEventLoop, conn: socket.socket, count: ConnectionCount
) -> None:
    """Answer 503 and close, reading what the client sent meanwhile: closed with unread data,
    the socket would be reset, and the client could lose the answer."""
    count.refused.inc()
    try:
        async with asyncio.timeout(_REFUSAL_S):
            await loop.sock_sendall(conn, _TOO_MANY)
            conn.shutdown(socket.SHUT_WR)
            while await loop.sock_recv(conn, 65536):
                pass
    except (OSError, TimeoutError):
        pass
    finally:
        conn.close()
        count.refusing -= 1
        count.wake()


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock, wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock)
