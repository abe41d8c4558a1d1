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

from tests.api.test_resilience import ABORT_BOUND_S, settles_to_zero
from tests.api.test_webhooks import Receiver
from tests.metrics import metric_sum
from tests.server import TINY_CARD, json_log, server_process
from tests.sse import asse_lines, sse_lines

MODEL = "deepinfra-serve/tiny-random-llama"
CHAT = "/v1/openai/chat/completions"
HELLO = [{"role": "user", "content": "Hello!"}]
LIMIT = 4  # the guarded server's concurrency limit


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
        "DEEPINFRA_SERVE_MAX_CONCURRENT_REQUESTS": str(LIMIT),
    }
    with server_process(TINY_CARD, cache_dir, log, env) as (url, _):
        yield url, log


@pytest.fixture(scope="module")
def timed(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose request time limit (0.5 s) only the timeout test's long request meets."""
    log = tmp_path_factory.mktemp("timed") / "server.log"
    env = {"DEEPINFRA_SERVE_REQUEST_TIMEOUT_S": "0.5"}
    with server_process(TINY_CARD, cache_dir, log, env) as (url, _):
        yield url


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
        # Unauthenticated garbage is a 401, not a validation error that reveals the schema;
        # the key is checked before the body is read at all.
        assert c.post(CHAT, json={"nonsense": 1}).status_code == 401
        assert c.post(CHAT, content=b"{not json").status_code == 401
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


def test_the_concurrency_limit_is_forced_429_and_the_engine_never_holds_more(
    guarded: tuple[str, Path],
) -> None:
    url, _ = guarded
    auth = {"Authorization": "Bearer secret-inline-1"}
    long = {"model": MODEL, "messages": HELLO, "max_tokens": 1000, "temperature": 0, "stream": True}
    short = {"model": MODEL, "messages": HELLO, "max_tokens": 2}

    async def scenario() -> tuple[list[httpx.Response], list[float]]:
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=auth) as ac:
            held = [ac.stream("POST", CHAT, json=long) for _ in range(LIMIT)]
            streams = [await h.__aenter__() for h in held]  # the limit, taken
            assert [r.status_code for r in streams] == [200] * LIMIT
            refused = await asyncio.gather(*(ac.post(CHAT, json=short) for _ in range(8)))
            native = await ac.post(f"/v1/inference/{MODEL}", json={"input": "Hi"})
            engine = [_engine_requests((await ac.get("/metrics")).text) for _ in range(5)]
            for h in held:
                await h.__aexit__(None, None, None)
        return [*refused, native], engine

    refused, engine = asyncio.run(scenario())
    for r in refused[:-1]:
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.json() == {
            "error": {
                "message": "Model busy, retry later",
                "type": "rate_limit_error",
                "param": None,
                "code": "model_busy",
            }
        }
    assert refused[-1].status_code == 429
    assert refused[-1].json() == {"error": "Model busy, retry later"}  # the native shape
    assert max(engine) <= LIMIT  # running + waiting, as the engine counts them
    with httpx.Client(base_url=url, timeout=60, headers=auth) as c:  # the slots came back
        assert c.post(CHAT, json=short).status_code == 200


def _engine_requests(metrics: str) -> float:
    return metric_sum(metrics, "vllm:num_requests_running", "vllm:num_requests_waiting")


def test_open_server_warns_at_start(server_log: Path, client: httpx.Client) -> None:
    assert "no API key configured" in server_log.read_text(errors="replace")


def test_request_timeout_aborts_the_engine_work(timed: str) -> None:
    # 960 greedy tokens, far more than 0.5 s of engine work. Greedy, because with the tiny
    # model's 512-token vocabulary a sampled run draws EOS within a few hundred tokens, at a
    # place that depends on the CPU's arithmetic.
    long = {"model": MODEL, "messages": HELLO, "max_tokens": 960, "temperature": 0}
    with httpx.Client(base_url=timed, timeout=30) as c:
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
        assert settles_to_zero(c) < ABORT_BOUND_S


async def _until_in_flight(ac: httpx.AsyncClient, n: int, within_s: float = 30) -> None:
    """Wait until the server serves `n` requests at once."""
    deadline = time.monotonic() + within_s
    while _in_flight((await ac.get("/metrics")).text) < n:
        assert time.monotonic() < deadline, f"{n} requests never ran together"
        await asyncio.sleep(0.05)


async def _until_in_flight_at(url: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as ac:
        await _until_in_flight(ac, n)


@contextlib.contextmanager
def _polling(url: str, paths: tuple[str, ...]) -> Iterator[dict[str, set[int]]]:
    """Status codes each path answers, polled every 50 ms in a thread while the block runs."""
    seen: dict[str, set[int]] = {path: set() for path in paths}
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=2) as p:
            while not done.is_set():
                for path, statuses in seen.items():
                    with contextlib.suppress(httpx.HTTPError):
                        statuses.add(p.get(path).status_code)
                time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        yield seen
    finally:
        done.set()
        poller.join()


def _in_flight(metrics: str) -> float:
    return metric_sum(metrics, "deepinfra_requests_in_flight")


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
                await _until_in_flight(ac, 20)
                proc.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + 10
                while (ready := (await ac.get("/health/ready")).status_code) == 200:
                    assert time.monotonic() < deadline, "readiness never turned 503"
                    await asyncio.sleep(0.05)
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
    log = (tmp_path / "sigterm.log").read_text(errors="replace")
    # The drain is the server's: its line carries no request's id, whichever task the
    # signal interrupted.
    [drain] = json_log(tmp_path / "sigterm.log", "SIGTERM: draining")
    assert drain["request_id"] is None
    # A clean stop leaves no traceback behind (the engine is let go of before exit).
    assert "Traceback" not in log


# 150 greedy streams of 1000 tokens (greedy: no early end at a drawn EOS): 150,000 tokens,
# tens of seconds of work on a 2-core machine (the engine alone makes about 12,000 tokens/s
# here), far beyond the grace and stop times the two tests below allow.
HEAVY = {"model": MODEL, "messages": HELLO, "max_tokens": 1000, "temperature": 0, "stream": True}
STREAMS = 150


async def _cut_short(url: str, proc: Any, signals: int) -> tuple[list[list[str]], float]:
    """STREAMS heavy streams; once all run, `signals` SIGTERMs (the second after readiness turned
    503). The streams' lines, and the seconds from the first signal to the exit."""

    async def one(ac: httpx.AsyncClient) -> list[str]:
        lines: list[str] = []
        with contextlib.suppress(httpx.HTTPError):
            async with ac.stream("POST", CHAT, json=HEAVY) as r:
                async for line in asse_lines(r):
                    if line:
                        lines.append(line)
        return lines

    limits = httpx.Limits(max_connections=STREAMS + 10)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as ac:
        streams = [asyncio.create_task(one(ac)) for _ in range(STREAMS)]
        await _until_in_flight(ac, STREAMS)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        if signals == 2:
            deadline = time.monotonic() + 10
            while (await ac.get("/health/ready")).status_code == 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
        while proc.poll() is None:
            assert time.monotonic() - signalled < 60, "the server did not stop"
            await asyncio.sleep(0.05)
        stopped = time.monotonic() - signalled
        return await asyncio.gather(*streams), stopped


def _complete(lines: list[str]) -> bool:
    """A heavy stream that ran to its end: all its tokens, then [DONE]."""
    return lines[-1:] == ["data: [DONE]"] and '"finish_reason":"length"' in lines[-2]


def test_the_drain_stops_when_the_grace_period_is_over(cache_dir: Path, tmp_path: Path) -> None:
    env = {"DEEPINFRA_SERVE_SHUTDOWN_GRACE_S": "2"}
    with server_process(TINY_CARD, cache_dir, tmp_path / "grace.log", env) as (url, proc):
        results, stopped = asyncio.run(_cut_short(url, proc, signals=1))
    # 2 s of grace, uvicorn's own 5 s for open connections (streams still running are cut),
    # then the engine's shutdown; the heavy streams alone would run for tens of seconds more.
    assert 2 <= stopped < 2 + 5 + 20
    assert proc.returncode == 0
    assert not all(_complete(lines) for lines in results)
    assert "grace period over with" in (tmp_path / "grace.log").read_text(errors="replace")


def test_a_second_sigterm_stops_at_once(cache_dir: Path, tmp_path: Path) -> None:
    with server_process(TINY_CARD, cache_dir, tmp_path / "twice.log") as (url, proc):
        results, stopped = asyncio.run(_cut_short(url, proc, signals=2))
    # The default grace is 25 s; the second signal stops the server without waiting for it.
    assert stopped < 25
    assert proc.returncode == -signal.SIGTERM  # uvicorn stops, then re-raises the signal
    assert not all(_complete(lines) for lines in results)


def test_engine_death_fails_every_request_and_exits_1(cache_dir: Path, tmp_path: Path) -> None:
    """A killed engine core: a stream gets an error event, a plain request 503 `engine_dead`,
    a webhook job delivers `failed`, the probes turn 503, and the process exits exactly 1."""
    # Greedy throughout, so that nothing ends early on a drawn EOS (see the timeout test).
    long = {"model": MODEL, "messages": HELLO, "max_tokens": 960, "temperature": 0}
    env = {"DEEPINFRA_SERVE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2/32"}
    receiver = Receiver()
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    plain: list[httpx.Response] = []
    try:
        with server_process(TINY_CARD, cache_dir, tmp_path / "kill.log", env) as (url, proc):
            engine = _engine_core(proc)
            with httpx.Client(base_url=url, timeout=60) as c:
                job = {"input": "Hello", "max_new_tokens": 900, "temperature": 0}
                job["webhook"] = receiver.url
                assert c.post(f"/v1/inference/{MODEL}", json=job).status_code == 200
                waiting = threading.Thread(target=lambda: plain.append(c.post(CHAT, json=long)))
                waiting.start()
                with c.stream("POST", CHAT, json={**long, "stream": True}) as s:
                    lines = sse_lines(s)
                    assert next(lines).startswith("data: {")
                    asyncio.run(_until_in_flight_at(url, 2))
                    with _polling(url, ("/health", "/health/ready")) as probes:
                        engine.kill()
                        rest = [line for line in lines if line.startswith("data: ")]
                        waiting.join(timeout=60)
                        returncode = proc.wait(timeout=60)
        receiver.wait_for(lambda: receiver.bodies)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    assert rest[-1] == "data: [DONE]"
    assert json.loads(rest[-2][6:])["error"]["code"] == "engine_dead"
    [answer] = plain
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "engine_dead"
    # Between the death and the exit, both probes said so.
    assert 503 in probes["/health"] and 503 in probes["/health/ready"]
    [delivered] = receiver.bodies
    assert delivered["inference_status"]["status"] == "failed"
    assert "generation failed" in delivered["error"]
    assert returncode == 1


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
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 900, "temperature": 0, "stream": True}
    with server_process(TINY_CARD, cache_dir, tmp_path / "hung.log", env) as (url, proc):
        engine = _engine_core(proc)
        try:
            with httpx.Client(base_url=url, timeout=30) as c:
                # Idle for longer than the stall time: an idle engine is not hung.
                time.sleep(stall_s + 2)
                assert c.get("/health/ready").status_code == 200
                with c.stream("POST", CHAT, json=body) as s:
                    lines = sse_lines(s)
                    assert next(lines).startswith("data: {")
                    engine.suspend()  # SIGSTOP: alive, and silent
                    stopped = time.monotonic()
                    with _polling(url, ("/health/live", "/health/ready")) as seen:
                        rest = [line for line in lines if line.startswith("data: ")]
                        elapsed = time.monotonic() - stopped
                        returncode = proc.wait(timeout=60)
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
