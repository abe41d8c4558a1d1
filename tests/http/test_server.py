"""The SIGTERM drain runs as the server's own work, not as part of the request it interrupted.

Python runs a signal handler in the main thread between two bytecodes of whatever is running,
often a request's task; the drain started from there must not inherit that request's context
(its log lines would carry the request's id). The drain itself is replaced by a recorder here;
the real one is tested end to end in tests/engine/test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import signal

import uvicorn

from deepinfra_serve.engine.lifecycle import Lifecycle
from deepinfra_serve.http.server import DrainingServer
from deepinfra_serve.observability.record import RequestRecord, bind, current_request_id, unbind


class RecordingServer(DrainingServer):
    """A test double for the drain: records the request id it sees."""

    seen: list[str | None]

    async def _drain(self) -> None:
        self.seen.append(current_request_id())


async def test_the_drain_runs_outside_the_interrupted_requests_context() -> None:
    server = RecordingServer(uvicorn.Config(app=None), Lifecycle("m", None), grace_s=0)
    server.seen = []
    token = bind(RequestRecord(request_id="req-in-flight", model="m"), {})
    try:
        server.handle_exit(signal.SIGTERM, None)  # as if the signal interrupted this request
    finally:
        unbind(token)
    for _ in range(3):  # the callback, then the task it creates
        await asyncio.sleep(0)
    assert server.draining and server.seen == [None]
