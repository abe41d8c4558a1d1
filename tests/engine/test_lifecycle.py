"""Keys, timeouts, graceful shutdown and engine death, each on a server of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.api.test_resilience import running
from tests.server import TINY_CARD, server_process
from tests.sse import asse_lines, sse_lines

MODEL = "deepinfra-serve/tiny-random-llama"
CHAT = "/v1/openai/chat/completions"
HELLO = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(scope="module")
def guarded(
    cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    work = tmp_path_factory.mktemp("guarded")
    keys = work / "api-keys"
    keys.write_text("# mounted from a Secret\nsecret-from-file\n")
    log = work / "server.log"
    env = {
        "DEEPINFRA_SERVE_API_KEYS": "secret-inline-1, secret-inline-2",
        "DEEPINFRA_SERVE_API_KEYS_FILE": str(keys),
        "DEEPINFRA_SERVE_REQUEST_TIMEOUT_S": "0.5",
    }
    with server_process(TINY_CARD, cache_dir, log, env) as (url, _):
        yield url, log


def test_api_keys(guarded: tuple[str, Path]) -> None:
    url, log = guarded
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 2}
    with httpx.Client(base_url=url, timeout=30) as c:
        missing = c.post(CHAT, json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = c.post(CHAT, json=body, headers={"Authorization": "Bearer secret-inline-3"})
        assert wrong.status_code == 401
        native = c.post(f"/v1/inference/{MODEL}", json={"input": "Hi"})
        assert native.status_code == 401 and set(native.json()) == {"error"}
        for key in ("secret-inline-1", "secret-inline-2", "secret-from-file"):
            ok = c.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200, key
        # Unauthenticated garbage is a 401, not a validation error that reveals the schema.
        assert c.post(CHAT, json={"nonsense": 1}).status_code == 401
        for open_path in (
            "/v1/openai/models",
            "/health",
            "/health/live",
            "/health/ready",
            "/metrics",
        ):
            assert c.get(open_path).status_code == 200, open_path
    text = log.read_text(errors="replace")
    assert "API keys required (3 configured)" in text
    assert "secret-" not in text


def test_open_server_warns_at_start(server_log: Path, client: httpx.Client) -> None:
    assert "no API key configured" in server_log.read_text(errors="replace")


def test_request_timeout_aborts_the_engine_work(guarded: tuple[str, Path]) -> None:
    url, _ = guarded
    auth = {"Authorization": "Bearer secret-inline-1"}
    long = {"model": MODEL, "messages": HELLO, "max_tokens": 480, "n": 3}
    with httpx.Client(base_url=url, timeout=30, headers=auth) as c:
        r = c.post(CHAT, json=long)
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "timeout"
        assert "timed out after 0.5 s" in r.json()["error"]["message"]
        with c.stream("POST", CHAT, json={**long, "stream": True}) as s:
            assert s.status_code == 200
            events = [line[6:] for line in sse_lines(s) if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "timeout"
        # Both timed-out requests were aborted in the engine.
        deadline = time.monotonic() + 1
        while running(c) != 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)


async def _stream_all(url: str, n: int, body: dict[str, Any]) -> list[tuple[int, list[str]]]:
    async def one(ac: httpx.AsyncClient) -> tuple[int, list[str]]:
        async with ac.stream("POST", CHAT, json=body) as r:
            return r.status_code, [line async for line in asse_lines(r) if line]

    async with httpx.AsyncClient(base_url=url, timeout=120) as ac:
        return await asyncio.gather(*(one(ac) for _ in range(n)))


def test_sigterm_drains_in_flight_streams_and_exits_0(cache_dir: Path, tmp_path: Path) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 200, "stream": True, "temperature": 0}
    with server_process(TINY_CARD, cache_dir, tmp_path / "sigterm.log") as (url, proc):

        async def scenario() -> tuple[list[tuple[int, list[str]]], int, int]:
            streams = asyncio.create_task(_stream_all(url, 20, body))
            async with httpx.AsyncClient(base_url=url, timeout=10) as ac:
                deadline = time.monotonic() + 20
                while (await ac.get("/metrics")).text.count("deepinfra_requests_in_flight") == 0:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                while (
                    'deepinfra_requests_in_flight{api="chat"' not in (await ac.get("/metrics")).text
                ):
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # all 20 under way
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)
                ready = (await ac.get("/health/ready")).status_code
                refused = (await ac.post(CHAT, json={**body, "stream": False})).status_code
            return await streams, ready, refused

        results, ready, refused = asyncio.run(scenario())
        returncode = proc.wait(timeout=60)
    assert ready == 503
    assert refused == 503
    assert [status for status, _ in results] == [200] * 20
    assert all(lines[-1] == "data: [DONE]" for _, lines in results)
    assert all('"finish_reason":"length"' in lines[-2] for _, lines in results)
    assert returncode == 0
    # A clean stop leaves no traceback behind (the engine is let go of before exit).
    assert "Traceback" not in (tmp_path / "sigterm.log").read_text(errors="replace")


def test_engine_death_fails_requests_and_exits_non_zero(cache_dir: Path, tmp_path: Path) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 480, "n": 3, "stream": True}
    with server_process(TINY_CARD, cache_dir, tmp_path / "kill.log") as (url, proc):
        engine = next(
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if p.name() == "VLLM::EngineCore"
        )
        with httpx.Client(base_url=url, timeout=30) as c, c.stream("POST", CHAT, json=body) as s:
            lines = sse_lines(s)
            assert next(lines).startswith("data: {")
            engine.kill()
            rest = [line for line in lines if line.startswith("data: ")]
            health = c.get("/health").status_code
        returncode = proc.wait(timeout=60)
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2][6:])["error"]["code"] == "engine_dead"
    assert health == 503
    assert returncode not in (0, None)


def _engine_core(proc: Any) -> psutil.Process:
    return next(
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if p.name() == "VLLM::EngineCore"
    )


def test_a_hung_engine_fails_the_probes_and_streams_then_exits(
    cache_dir: Path, tmp_path: Path
) -> None:
    stall_s = 4.0
    env = {"DEEPINFRA_SERVE_ENGINE_STALL_TIMEOUT_S": str(stall_s)}
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 900, "stream": True}
    with server_process(TINY_CARD, cache_dir, tmp_path / "hung.log", env) as (url, proc):
        engine = _engine_core(proc)
        try:
            with httpx.Client(base_url=url, timeout=30) as c:
                # Idle for longer than the stall time: an idle engine is not hung.
                time.sleep(stall_s + 2)
                assert c.get("/health/ready").status_code == 200
                seen: dict[str, set[int]] = {"/health/live": set(), "/health/ready": set()}
                polling = threading.Event()

                def poll() -> None:
                    with httpx.Client(base_url=url, timeout=2) as p:
                        while not polling.is_set():
                            for path, statuses in seen.items():
                                with contextlib.suppress(httpx.HTTPError):
                                    statuses.add(p.get(path).status_code)
                            time.sleep(0.1)

                with c.stream("POST", CHAT, json=body) as s:
                    lines = sse_lines(s)
                    assert next(lines).startswith("data: {")
                    engine.suspend()  # SIGSTOP: alive, and silent
                    stopped = time.monotonic()
                    poller = threading.Thread(target=poll)
                    poller.start()
                    rest = [line for line in lines if line.startswith("data: ")]
                    elapsed = time.monotonic() - stopped
            returncode = proc.wait(timeout=60)
            polling.set()
            poller.join()
        finally:
            if engine.is_running():
                engine.kill()
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2][6:])["error"]["code"] == "engine_dead"
    assert stall_s <= elapsed < stall_s + 5
    # Between the stall and the exit, both probes fail.
    assert 503 in seen["/health/ready"] and 503 in seen["/health/live"]
    assert returncode not in (0, None)
    assert "made no progress" in (tmp_path / "hung.log").read_text(errors="replace")
