"""The benchmark's load generator: one keep-alive connection per stream, not one per request.

Against a minimal HTTP/1.1 server on loopback (a stand-in for the servers under test: the
bench measures them, this checks only the client), which answers every request with a chunked
SSE stream and counts the connections it accepts.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from benchmarks.workload import run_level


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    + _chunk(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n')
    + _chunk(b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n')
    + _chunk(b'data: {"choices":[],"usage":{"completion_tokens":2}}\n\ndata: [DONE]\n\n')
    + b"0\r\n\r\n"
)


class StandInServer:
    """Answers each request of a connection in turn; stopped with its loop's thread."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def stand_in() -> Iterator[StandInServer]:
    server = StandInServer()
    server.thread.start()
    assert server.ready.wait(10)
    yield server
    server.stop()
    assert not server.thread.is_alive()


def test_one_connection_per_stream(stand_in: StandInServer) -> None:
    level = run_level(f"http://127.0.0.1:{stand_in.port}", "/chat", "m", 3, 12, 2)
    assert [s.error for s in level.samples if not s.ok] == []
    assert len(level.samples) == 12 and stand_in.requests == 12
    assert all(s.tokens == 2 and s.ttft is not None for s in level.samples)
    assert stand_in.connections == 3
