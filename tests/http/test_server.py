"""The server's own settings and work: how many connections it holds, and a drain that runs as
the server's own work, not as part of the request it interrupted.

Python runs a signal handler in the main thread between two bytecodes of whatever is running,
often a request's task; the drain started from there must not inherit that request's context
(its log lines would carry the request's id). The drain itself is replaced by a recorder here;
the real one is tested end to end in tests/http/test_shutdown.py.
"""

from __future__ import annotations

import asyncio
import resource
import signal

import pytest
import uvicorn

from deepinfra_serve.config.settings import ServerSettings
from deepinfra_serve.engine.lifecycle import Lifecycle
from deepinfra_serve.http.connections import ConnectionCount
from deepinfra_serve.http.server import DrainingServer, connection_limit
from deepinfra_serve.observability.record import RequestRecord, bind, current_request_id, unbind


class RecordingServer(DrainingServer):
    """A test double for the drain: records the request id it sees."""

    seen: list[str | None]

    async def _drain(self) -> None:
        self.seen.append(current_request_id())


async def test_the_drain_runs_outside_the_interrupted_requests_context() -> None:
    server = RecordingServer(
        uvicorn.Config(app=None), Lifecycle("m", None), 0, ConnectionCount("m", 8), 30
    )
    server.seen = []
    token = bind(RequestRecord(request_id="req-in-flight", model="m"), {})
    try:
        server.handle_exit(signal.SIGTERM, None)  # as if the signal interrupted this request
    finally:
        unbind(token)
    for _ in range(3):  # the callback, then the task it creates
        await asyncio.sleep(0)
    assert server.draining and server.seen == [None]


def test_the_connection_limit_fits_the_concurrency_limit_and_the_open_file_limit() -> None:
    settings = ServerSettings()
    assert connection_limit(settings, admitted=200) == 1024  # at least 1,024
    assert connection_limit(settings, admitted=1000) == 4000  # four per admitted request
    assert connection_limit(settings, admitted=1000, processes=3) == 1334  # shared among them
    assert connection_limit(ServerSettings(max_connections=50), admitted=1000) == 50
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)  # raised to the hard limit
    assert connection_limit(ServerSettings(max_connections=10**9), admitted=1) == soft - 256


def test_the_pending_bodies_bound_fits_one_body() -> None:
    with pytest.raises(ValueError, match="max_pending_body_bytes must be at least max_body_bytes"):
        ServerSettings(max_body_bytes=2048, max_pending_body_bytes=1024)
