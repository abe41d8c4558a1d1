"""A dead or hung engine takes the server down: requests in flight get their error at once,
the probes fail, and the process exits non-zero to be restarted. Each on a server of its own."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx

from ..helpers import (
    CHAT,
    HELLO,
    MODEL,
    TINY_CARD,
    engine_core,
    polling,
    receiving,
    server_process,
    sse_lines,
    until_in_flight,
)


async def _until_in_flight_at(url: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as ac:
        await until_in_flight(ac, n)


def test_engine_death_fails_every_request_and_exits_1(cache_dir: Path, tmp_path: Path) -> None:
    """A killed engine core: a stream gets an error event, a plain request 503 `engine_dead`,
    a webhook job delivers `failed`, the probes turn 503, and the process exits exactly 1."""
    # Greedy throughout, so that nothing ends early on a drawn EOS (see the timeout test).
    long = {"model": MODEL, "messages": HELLO, "max_tokens": 960, "temperature": 0}
    env = {"DEEPINFRA_SERVE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2/32"}
    plain: list[httpx.Response] = []
    with receiving() as receiver:
        with server_process(TINY_CARD, cache_dir, tmp_path / "kill.log", env) as (url, proc):
            engine = engine_core(proc)
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
                    with polling(url, ("/health", "/health/ready")) as probes:
                        engine.kill()
                        rest = [line for line in lines if line.startswith("data: ")]
                        waiting.join(timeout=60)
                        returncode = proc.wait(timeout=60)
        receiver.wait_for(lambda: receiver.bodies)
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


def test_a_hung_engine_fails_the_probes_and_streams_then_exits(
    cache_dir: Path, tmp_path: Path
) -> None:
    stall_s = 4.0
    env = {"DEEPINFRA_SERVE_ENGINE_STALL_TIMEOUT_S": str(stall_s)}
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 900, "temperature": 0, "stream": True}
    with server_process(TINY_CARD, cache_dir, tmp_path / "hung.log", env) as (url, proc):
        engine = engine_core(proc)
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
                    with polling(url, ("/health/live", "/health/ready")) as seen:
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
