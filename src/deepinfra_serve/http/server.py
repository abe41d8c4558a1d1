"""One API process: the app under uvicorn, draining on SIGTERM or SIGINT.

The same code runs the single process of a CPU server and each of several front-end processes
over a shared engine core, which hand it the listening socket they share and a shared array of
their open connections. Connections are accepted by `connections.accept_connections` rather
than uvicorn's own server: it bounds how many the process holds and, with several processes,
gives each pending connection to the least loaded one (the event loop's server would let
whichever process wakes first take nearly every queued connection).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import resource
import signal
import socket
import time
from collections.abc import Callable, MutableSequence
from types import FrameType

import uvicorn

from ..config.cards import ModelCard
from ..config.settings import ServerSettings
from ..engine.lifecycle import Lifecycle, SharedState
from ..engine.served_model import ServedModel
from .connections import ConnectionCount, accept_connections, with_read_deadline

log = logging.getLogger(__name__)

_BACKLOG = 2048  # connections the kernel queues while none is accepted
_SPARE_FILES = 256  # open files the process keeps for everything but client connections


def listening_socket(host: str, port: int) -> socket.socket | None:
    """The server's bound socket; None (the reason logged) when the address cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=_BACKLOG)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return None


def connection_limit(settings: ServerSettings, admitted: int, processes: int = 1) -> int:
    """Connections each of `processes` API processes holds: the setting, or four per request
    the server admits at once (at least 1,024), shared among them and kept within the open-file
    limit, which is raised to its hard maximum first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    wanted = settings.max_connections or max(1024, 4 * admitted)
    per_process = math.ceil(wanted / processes)
    fits = max(1, soft - _SPARE_FILES)
    if per_process > fits:
        log.warning(
            "%d connections per process do not fit the open-file limit (%d): holding %d",
            per_process,
            soft,
            fits,
        )
    return min(per_process, fits)


def run_server(
    card: ModelCard,
    settings: ServerSettings,
    start_model: Callable[[], ServedModel],
    *,
    sock: socket.socket | None = None,
    shared: SharedState | None = None,
    peer_loads: tuple[MutableSequence[int], int] | None = None,
) -> int:
    """Serve until stopped; 0 after a clean stop or drain, 1 once the engine failed (or the
    port could not be had).

    `sock`, `shared` and `peer_loads` are given to each of several API processes: the socket
    they share, their shared state, and their shared connection counts with this one's index."""
    from .app import create_app

    failed = False

    def on_fatal() -> None:
        nonlocal failed
        failed = True
        server.should_exit = True

    if sock is None:
        sock = listening_socket(settings.host, settings.port)
        if sock is None:
            return 1
    app = create_app(card, start_model, settings, on_fatal, shared)
    config = uvicorn.Config(
        app,
        log_level=settings.log_level.lower(),
        access_log=False,  # the service writes its own JSON access lines
        # uvicorn reads it as seconds, fractions too; its hint says int.
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=5,
        backlog=_BACKLOG,
    )
    admitted = settings.max_concurrent_requests or card.limits.max_concurrent_requests
    processes = 1 if peer_loads is None else len(peer_loads[0])
    count = ConnectionCount(card.name, connection_limit(settings, admitted, processes), peer_loads)
    server = DrainingServer(
        config, app.state.lifecycle, settings.shutdown_grace_s, count, settings.read_timeout_s
    )
    if peer_loads is None or peer_loads[1] == 0:
        host, port = sock.getsockname()[:2]
        limit = count.limit
        log.info("listening on http://%s:%d (at most %d connections each)", host, port, limit)
    server.run(sockets=[sock])
    return 1 if failed else 0


class DrainingServer(uvicorn.Server):
    """On SIGTERM or SIGINT, drain before stopping: readiness turns 503 and new API requests are
    refused while the listening socket stays open; once in-flight requests have finished (or
    the grace period is over) the server stops and the process exits 0. A second signal stops
    at once.

    SIGINT drains too: Ctrl-C in a terminal signals the whole process group, and the engine,
    in a group of its own, keeps serving until the drain is over (`engine.core_process`)."""

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        grace_s: float,
        connections: ConnectionCount,
        read_timeout_s: float,
    ) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace_s = grace_s
        self.connections = connections
        self.read_timeout_s = read_timeout_s
        self.draining = False
        self.signal = "SIGTERM"  # the one that started the drain
        self._accepting: list[asyncio.Task[None]] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the lifespan, and no asyncio server of uvicorn's
        config, loop = self.config, asyncio.get_running_loop()
        protocol = with_read_deadline(
            config.http_protocol_class, self.read_timeout_s, self.connections
        )

        def make_protocol() -> asyncio.Protocol:
            return protocol(  # type: ignore[call-arg]  # uvicorn's protocols take these; asyncio.Protocol's hint does not
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=loop,
            )

        self.connections.publish()
        for sock in sockets or []:
            sock.listen(config.backlog)
            sock.setblocking(False)
            self._accepting.append(
                loop.create_task(accept_connections(sock, make_protocol, self.connections))
            )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for task in self._accepting:  # before uvicorn closes the sockets
            task.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        self.connections.stop_publishing()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig not in (signal.SIGTERM, signal.SIGINT) or self.draining:
            super().handle_exit(sig, frame)
            return
        self.draining = True
        self.signal = signal.Signals(sig).name
        loop = asyncio.get_event_loop()
        # The signal lands in whatever task runs; a fresh context keeps that request's id
        # off the drain's log lines.
        loop.call_soon_threadsafe(
            lambda: loop.create_task(self._drain()), context=contextvars.Context()
        )

    async def _drain(self) -> None:
        lifecycle = self.lifecycle
        lifecycle.drain()
        log.info(
            "%s: draining %d in-flight requests and %d webhook jobs",
            self.signal,
            lifecycle.in_flight,
            lifecycle.background,
        )
        deadline = time.monotonic() + self.grace_s
        while lifecycle.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if lifecycle.busy:
            log.warning(
                "grace period over with %d requests and %d webhook jobs in flight",
                lifecycle.in_flight,
                lifecycle.background,
            )
        # Not handle_exit: uvicorn would re-raise SIGTERM after stopping and the exit code
        # would say "killed" instead of 0.
        self.should_exit = True
