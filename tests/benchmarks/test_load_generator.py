"""The benchmark's load generator: one keep-alive connection per stream, not one per request.

Against the standard library's HTTP/1.1 server on loopback (a stand-in for the servers under
test: the bench measures them, this checks only the client), which answers every request with
a chunked SSE stream and counts the connections it handles.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from benchmarks.workload import run_level


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


BODY = (
    _chunk(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n')
    + _chunk(b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n')
    + _chunk(b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    + b"0\r\n\r\n"
)


class StandInServer(ThreadingHTTPServer):
    """Counts connections (one handler each) and requests; keeps connections alive."""

    daemon_threads = True

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive

            def setup(self) -> None:
                super().setup()
                server.connections += 1

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                server.requests += 1
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                self.wfile.write(BODY)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]


@pytest.fixture
def stand_in() -> Iterator[StandInServer]:
    server = StandInServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_one_connection_per_stream(stand_in: StandInServer) -> None:
    level = run_level(f"http://127.0.0.1:{stand_in.port}", "/chat", "m", 3, 12, 2)
    assert [s.error for s in level.samples if not s.ok] == []
    assert len(level.samples) == 12 and stand_in.requests == 12
    assert all(s.tokens == 2 and s.ttft is not None for s in level.samples)
    assert stand_in.connections == 3
