"""Disconnects, load and bad requests against the session's real server and engine."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from typing import Any

import httpx

from ..helpers import ABORT_BOUND_S, HELLO, MODEL, running, settles_to_zero

LONG = {
    "model": MODEL,
    "messages": HELLO,
    "max_tokens": 480,
    "n": 3,
    "temperature": 1,
    "seed": 11,  # long by construction: no early end at a drawn EOS
}


def test_stream_disconnect_aborts_the_engine_request(client: httpx.Client, base_url: str) -> None:
    with (
        httpx.Client(base_url=base_url, timeout=30) as other,
        other.stream("POST", "/v1/openai/chat/completions", json={**LONG, "stream": True}) as r,
    ):
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert running(client) > 0
    # Leaving the block closed the connection mid-stream.
    assert settles_to_zero(client) < ABORT_BOUND_S


def test_non_streaming_disconnect_aborts_the_engine_request(
    client: httpx.Client, base_url: str
) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(base_url=base_url) as ac:
            task = asyncio.create_task(ac.post("/v1/openai/chat/completions", json=LONG))
            deadline = time.monotonic() + 10
            while running(client) == 0:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            task.cancel()  # closes the connection before the answer
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(go())
    assert settles_to_zero(client) < ABORT_BOUND_S


def test_256_concurrent_streams_complete_or_get_429(base_url: str) -> None:
    body = {**LONG, "n": 1, "max_tokens": 16, "stream": True}

    async def one(ac: httpx.AsyncClient) -> tuple[int, bool, dict[str, Any]]:
        async with ac.stream("POST", "/v1/openai/chat/completions", json=body) as r:
            lines = [line async for line in r.aiter_lines() if line]
            if r.status_code == 429:
                assert lines == [
                    '{"error":{"message":"Model busy, retry later","type":"rate_limit_error",'
                    '"param":null,"code":"model_busy"}}'
                ]
            return r.status_code, bool(lines) and lines[-1] == "data: [DONE]", dict(r.headers)

    async def go() -> list[tuple[int, bool, dict[str, Any]]]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as ac:
            return await asyncio.gather(*(one(ac) for _ in range(256)))

    results = asyncio.run(go())
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 429}, statuses
    assert all(done for s, done, _ in results if s == 200)
    assert all(h.get("retry-after") == "1" for s, _, h in results if s == 429)
    assert statuses.count(200) >= 200  # the card's bound is 200 in flight


def test_oversized_body_is_413(client: httpx.Client) -> None:
    big = {"model": MODEL, "messages": [{"role": "user", "content": "a" * (9 * 1024 * 1024)}]}
    r = client.post("/v1/openai/chat/completions", json=big)
    assert r.status_code == 413
    assert "larger than 8388608 bytes" in r.json()["error"]["message"]


def test_unknown_paths_answer_in_the_apis_error_shape(client: httpx.Client) -> None:
    r = client.get("/v1/openai/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/v1/openai/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"
    r = client.put("/v1/completions", json={"model": MODEL, "prompt": "Hi"})
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    # Under the native mount, DeepInfra's own shape: {"error": "..."}.
    r = client.get(f"/v1/inference/{MODEL}")
    assert r.status_code == 405 and set(r.json()) == {"error"}
    assert isinstance(r.json()["error"], str)
    r = client.post("/v1/inference/", json={"input": "Hi"})
    assert r.status_code == 404 and set(r.json()) == {"error"}


def test_concurrent_seeded_requests_do_not_kill_the_cpu_engine(base_url: str) -> None:
    # Seeded sampling with chunked prefills crashed vLLM's CPU worker; the CPU profile turns
    # chunked prefill off. Prompts of several lengths arrive together, as they would under load.
    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as ac:

            async def one(i: int) -> int:
                content = "Tell me a long story about a lamb and a chef. " * (1 + i % 5)
                r = await ac.post(
                    "/v1/openai/chat/completions",
                    json={
                        "model": MODEL,
                        "messages": [{"role": "user", "content": content}],
                        "max_tokens": 16,
                        "seed": i,
                    },
                )
                return r.status_code

            return await asyncio.gather(*(one(i) for i in range(96)))

    assert asyncio.run(go()) == [200] * 96
    assert httpx.get(f"{base_url}/health").status_code == 200


def _exchange(sock: socket.socket, path: str) -> bytes:
    """One keep-alive request on `sock`; its whole response (b"" if the server had closed)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return data


def test_an_idle_connection_outlives_the_clients_keep_alive(base_url: str) -> None:
    # httpx (and so the openai client) reuses a connection idle for up to 5 s, uvicorn's own
    # default keep-alive: the server, whose clock starts first, could close it just as the
    # next request went out on it (a ReadError for that request). The server waits longer.
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        assert _exchange(sock, "/health/live").startswith(b"HTTP/1.1 200")
        time.sleep(6)
        assert _exchange(sock, "/health/live").startswith(b"HTTP/1.1 200")
