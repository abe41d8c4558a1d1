"""One API process: the app under uvicorn, draining on SIGTERM.

The same code runs the single process of a CPU server and each of several front-end processes
over a shared engine core, which hand it the listening socket they share and a shared array of
their open connections. With that array, vLLM's own accept loop (its server's, for
`--api-server-count`) gives each pending connection to the least loaded process: the event
loop's server would let whichever process wakes first take nearly every queued connection.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
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

log = logging.getLogger(__name__)


def run_server(
    card: ModelCard,
    settings: ServerSettings,
    start_model: Callable[[], ServedModel],
    *,
    sock: socket.socket | None = None,
    shared: SharedState | None = None,
    peer_loads: tuple[MutableSequence[int], int] | None = None,
) -> int:
    """Serve until stopped; 0 after a clean stop or drain, 1 once the engine failed.

    `peer_loads`: the front-end processes' shared connection counts and this one's index."""
    from .app import create_app

    failed = False

    def on_fatal() -> None:
        nonlocal failed
        failed = True
        server.should_exit = True

    app = create_app(card, start_model, settings, on_fatal, shared)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # the service writes its own JSON access lines
        timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=5,
    )
    lifecycle, grace_s = app.state.lifecycle, settings.shutdown_grace_s
    if peer_loads is None:
        server = DrainingServer(config, lifecycle, grace_s)
    else:
        server = balanced_server(config, lifecycle, grace_s, peer_loads)
    server.run(sockets=None if sock is None else [sock])
    return 1 if failed else 0


class DrainingServer(uvicorn.Server):
    """On SIGTERM, drain before stopping: readiness turns 503 and new API requests are refused
    while the listening socket stays open; once in-flight requests have finished (or the grace
    period is over) the server stops and the process exits 0. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, grace_s: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace_s = grace_s
        self.draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.draining:
            super().handle_exit(sig, frame)
            return
        self.draining = True
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
            "SIGTERM: draining %d in-flight requests and %d webhook jobs",
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


def balanced_server(
    config: uvicorn.Config,
    lifecycle: Lifecycle,
    grace_s: float,
    peer_loads: tuple[MutableSequence[int], int],
) -> DrainingServer:
    """A draining server that accepts by load, with vLLM's server class and accept loop.

    vLLM is imported here, not with the module: it brings torch (seconds to import), and a
    server of one process binds its port and answers its probes before its engine loads."""
    from vllm.entrypoints.launchers.launcher import NoSignalServer

    class BalancedServer(DrainingServer, NoSignalServer):
        # uvicorn's signal capture, which vLLM's class leaves out for handlers of its own:
        # it is what brings SIGTERM to the drain.
        capture_signals = uvicorn.Server.capture_signals

    server = BalancedServer(config, lifecycle, grace_s)
    server.peer_loads = peer_loads  # read by vLLM's startup, which then runs its accept loop
    return server
