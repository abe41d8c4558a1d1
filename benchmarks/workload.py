"""The streaming chat workload, and the load generator that sends it.

The load generator shares the machine with the servers, so it must cost far less per token
than they do, or it, not they, sets the throughput. An httpx client spent 260-320 ms of CPU per
1,000 streamed tokens at 128 streams here, more than either server; this one parses HTTP with
httptools (llhttp, the C parser uvicorn uses) in an asyncio protocol on uvloop, reads SSE lines
as bytes and parses JSON only for the usage chunk or an error event: about 12 ms.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools
import uvloop
from tqdm import tqdm

PROMPT = [{"role": "user", "content": "Hello! Tell me a long story about a lamb and a chef."}]
TIMEOUT_S = 600


@dataclass
class Sample:
    ok: bool
    ttft: float | None = None  # None: the answer had no text (EOS first), so no first token
    itl: float | None = None
    latency: float = 0.0
    tokens: int = 0
    error: str = ""  # why it failed: "HTTP 429", a connection error's class, "no [DONE]", ...


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one streaming request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(ConnectionError("connection closed mid-response"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(exc)
            assert self.transport is not None
            self.transport.close()

    def _finish(self, exc: BaseException | None = None) -> None:
        if self.response is not None and not self.response.done():
            if exc is None:
                self.response.set_result(None)
            else:
                self.response.set_exception(exc)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        # SSE lines end at LF only (splitting at every line break Python knows would also
        # split inside JSON strings holding U+2028 or U+0085, which generated text can).
        *lines, self.rest = (self.rest + body).split(b"\n")
        for line in lines:
            self.line(line)

    def on_message_complete(self) -> None:
        # Asked here: once the parser has finished the message it answers False.
        self.keep_alive = self.parser.should_keep_alive()
        if self.rest:
            self.line(self.rest)
            self.rest = b""
        self._finish()

    def line(self, line: bytes) -> None:
        if not line.startswith(b"data: {"):
            self.done = self.done or line == b"data: [DONE]"
            return
        # A quote inside generated text is escaped, so these patterns only match JSON syntax.
        if b'"error"' in line:
            chunk = json.loads(line[6:])
            if "error" in chunk:
                self.error = f"error event {chunk['error'].get('code')}"
        if b'"usage":{' in line:
            self.tokens = json.loads(line[6:])["usage"]["completion_tokens"]
        if b'"content":"' in line and b'"content":""' not in line:
            now = time.perf_counter()
            self.first = self.first or now
            self.last = now

    async def request(self, head: bytes, payload: bytes) -> Sample:
        assert self.transport is not None
        self.parser = httptools.HttpResponseParser(self)
        self.rest = b""
        self.first: float | None = None
        self.last: float | None = None
        self.tokens = 0
        self.done = False
        self.keep_alive = False
        self.error = ""
        self.response = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self.transport.write(head + payload)
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await self.response
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            self.transport.close()
            return Sample(ok=False, error=type(exc).__name__)
        end = time.perf_counter()
        if not self.keep_alive:
            self.transport.close()
        if (status := self.parser.get_status_code()) != 200:
            return Sample(ok=False, error=f"HTTP {status}")
        if self.error:
            return Sample(ok=False, error=self.error)
        if not self.done:
            return Sample(ok=False, error="no [DONE]")
        if self.first is None or self.last is None:  # a complete answer without text
            return Sample(ok=True, latency=end - started, tokens=self.tokens)
        itl = (self.last - self.first) / (self.tokens - 1) if self.tokens > 1 else None
        return Sample(
            ok=True, ttft=self.first - started, itl=itl, latency=end - started, tokens=self.tokens
        )


async def drive(
    base: str, path: str, bodies: Iterable[dict[str, Any]], concurrency: int, bar: tqdm
) -> tuple[list[Sample], float]:
    """Send the bodies as streaming POSTs over `concurrency` keep-alive connections."""
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    samples: list[Sample] = []
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        conn: Connection | None = None
        while not queue.empty():
            payload = json.dumps(queue.get_nowait()).encode()
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: text/event-stream\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            ).encode()
            if conn is None or conn.transport is None or conn.transport.is_closing():
                try:
                    _, conn = await loop.create_connection(Connection, host, port)
                except OSError as exc:
                    samples.append(Sample(ok=False, error=type(exc).__name__))
                    bar.update(1)
                    continue
            samples.append(await conn.request(head, payload))
            bar.update(1)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


def chat_bodies(model: str, requests: int, max_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "model": model,
            "messages": PROMPT,
            "max_tokens": max_tokens,
            "temperature": 1.0,
            "seed": 1000 + i,  # the same request i for both servers
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for i in range(requests)
    ]


def requests_per_level(concurrency: int) -> int:
    """Requests in one measurement: 32 per stream, between 64 and 2,048. At 8 per stream a
    round at 32 streams lasted about 3 s, and the API process's CPU time over so short a window
    moved by a fifth from one round to the next on a shared machine."""
    return max(64, min(32 * concurrency, 2048))


@dataclass
class Level:
    samples: list[Sample]
    elapsed: float
    client_cpu_s: float  # the load generator's own CPU over the run


def run(
    base: str, path: str, bodies: list[dict[str, Any]], concurrency: int, bar: tqdm | None = None
) -> Level:
    """One measured run, on a fresh uvloop loop, with the load generator's CPU time."""
    cpu = time.process_time()
    samples, elapsed = uvloop.run(drive(base, path, bodies, concurrency, bar or tqdm(disable=True)))
    return Level(samples, elapsed, time.process_time() - cpu)


def run_level(
    base: str,
    path: str,
    model: str,
    concurrency: int,
    requests: int,
    max_tokens: int,
    bar: tqdm | None = None,
) -> Level:
    return run(base, path, chat_bodies(model, requests, max_tokens), concurrency, bar)
