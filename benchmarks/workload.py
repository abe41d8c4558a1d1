"""The streaming chat workload: one request, and a level of concurrent ones."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from tqdm import tqdm

PROMPT = [{"role": "user", "content": "Hello! Tell me a long story about a lamb and a chef."}]


@dataclass
class Sample:
    ok: bool
    ttft: float | None = None  # None: the answer had no text (EOS first), so no first token
    itl: float | None = None
    latency: float = 0.0
    tokens: int = 0
    error: str = ""  # why it failed: "HTTP 429", an httpx error's class, "no [DONE]", ...


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """SSE lines end at LF only; `aiter_lines` would also split inside JSON strings that hold
    U+2028 or U+0085, which generated text can."""
    rest = b""
    async for chunk in chunks:
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            yield line
    if rest:
        yield rest


async def one_request(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Sample:
    started = time.perf_counter()
    first = last = None
    tokens = 0
    done = False
    try:
        async with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return Sample(ok=False, error=f"HTTP {r.status_code}")
            async for line in sse_lines(r.aiter_bytes()):
                if not line.startswith(b"data: {"):
                    done = done or line == b"data: [DONE]"
                    continue
                # The client shares the machine with the servers: it reads bytes, and parses
                # JSON only for an error event or the chunk that carries usage. A quote inside
                # generated text is escaped, so these patterns only match JSON syntax.
                if b'"error"' in line:
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        return Sample(ok=False, error=f"error event {chunk['error'].get('code')}")
                if b'"usage":{' in line:
                    tokens = json.loads(line[6:])["usage"]["completion_tokens"]
                if b'"content":"' in line and b'"content":""' not in line:
                    now = time.perf_counter()
                    first = first or now
                    last = now
    except httpx.HTTPError as exc:
        return Sample(ok=False, error=type(exc).__name__)
    if not done:
        return Sample(ok=False, error="no [DONE]")
    end = time.perf_counter()
    if first is None or last is None:  # a complete answer without text
        return Sample(ok=True, latency=end - started, tokens=tokens)
    itl = (last - first) / (tokens - 1) if tokens > 1 else None
    return Sample(ok=True, ttft=first - started, itl=itl, latency=end - started, tokens=tokens)


async def run_level(
    base: str,
    path: str,
    model: str,
    concurrency: int,
    requests: int,
    max_tokens: int,
    bar: tqdm,
) -> tuple[list[Sample], float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    samples: list[Sample] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = {
                "model": model,
                "messages": PROMPT,
                "max_tokens": max_tokens,
                "temperature": 1.0,
                "seed": 1000 + i,  # the same request i for both servers
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            samples.append(await one_request(client, path, body))
            bar.update(1)

    limits = httpx.Limits(max_connections=concurrency + 8)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return samples, elapsed
