"""SIGTERM or SIGINT, to the server or to its whole process group: the server drains what it
holds, within the grace period, and a second signal stops it at once; nothing accepted is lost
(webhook jobs cut short are delivered as failed). SIGKILL leaves no engine process behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..helpers import (
    CHAT,
    HELLO,
    INFERENCE,
    MODEL,
    TINY_CARD,
    asse_lines,
    descendants,
    killed_leaves_nothing,
    metric_sum,
    receiving,
    server_process,
    until_in_flight,
)


async def _stream_all(url: str, n: int, body: dict[str, Any]) -> list[tuple[int, list[str]]]:
    async def one(ac: httpx.AsyncClient) -> tuple[int, list[str]]:
        async with ac.stream("POST", CHAT, json=body) as r:
            return r.status_code, [line async for line in asse_lines(r) if line]

    async with httpx.AsyncClient(base_url=url, timeout=120) as ac:
        return await asyncio.gather(*(one(ac) for _ in range(n)))


def test_no_engine_outlives_a_killed_server(cache_dir: Path, tmp_path: Path) -> None:
    """A server of two API processes killed outright: its engine core, worker and API processes
    are gone within seconds, and the next server on the same card (this module's `cut_short`)
    starts. One API process killed: `test_timeouts.py`, at the end of its server."""
    two = {"DEEPINFRA_SERVE_API_PROCESSES": "2"}
    with server_process(TINY_CARD, cache_dir, tmp_path / "two.log", two) as (url, proc):
        assert sum("spawn_main" in " ".join(p.cmdline()) for p in descendants(proc)) == 2
        killed_leaves_nothing(url, proc)


# 150 greedy streams of 1000 tokens (greedy: no early end at a drawn EOS): 150,000 tokens,
# tens of seconds of work on a 2-core machine (the engine alone makes about 12,000 tokens/s
# here), far beyond the grace and stop times the two tests below allow.


HEAVY = {"model": MODEL, "messages": HELLO, "max_tokens": 1000, "temperature": 0, "stream": True}
STREAMS = 150
FLEX_WAITERS = 3


async def _cut_short(
    url: str,
    proc: Any,
    signals: int,
    jobs: dict[str, Any] | None = None,
    group: bool = False,
    flex: list[httpx.Response] | None = None,
) -> tuple[list[list[str]], float, list[str]]:
    """STREAMS heavy streams; once all run, four webhook `jobs` if given (they share the engine
    with the streams, so that none can finish within a short grace), then, given a `flex`
    list, FLEX_WAITERS flex requests that wait for room (their answers go into it), then
    `signals` SIGTERMs (the second after readiness turned 503), the first to the server's
    process group if `group`. The streams' lines, the seconds from the first signal to the
    exit, and the jobs' request ids."""

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
        await until_in_flight(ac, STREAMS)
        queued = []
        if jobs is not None:
            for _ in range(4):
                queued.append((await ac.post(INFERENCE, json=jobs)).json()["request_id"])
        waiters = []
        if flex is not None:
            body = {**HEAVY, "stream": False, "service_tier": "flex"}
            waiters = [asyncio.create_task(ac.post(CHAT, json=body)) for _ in range(FLEX_WAITERS)]
            deadline = time.monotonic() + 20
            text = ""
            while metric_sum(text, "deepinfra_flex_waiting_requests") < FLEX_WAITERS:
                assert time.monotonic() < deadline, "the flex requests are not waiting"
                await asyncio.sleep(0.05)
                text = (await ac.get("/metrics")).text
        if group:  # as a supervisor that stops groups, or `kill -- -PGID`, sends it
            os.killpg(proc.pid, signal.SIGTERM)
        else:
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
        if flex is not None:
            flex += await asyncio.gather(*waiters)
        return await asyncio.gather(*streams), stopped, queued


def _complete(lines: list[str]) -> bool:
    """A heavy stream that ran to its end: all its tokens, then [DONE]."""
    return lines[-1:] == ["data: [DONE]"] and '"finish_reason":"length"' in lines[-2]


@dataclass
class CutShort:
    """What one drain cut short by its grace left behind."""

    results: list[list[str]]  # the heavy streams' lines
    stopped: float  # seconds from SIGTERM to the exit
    returncode: int
    log: str
    queued: list[str]  # the webhook jobs' request ids
    delivered: list[dict[str, Any]]  # what their webhook received
    flex: list[httpx.Response]  # the answers of the flex requests waiting at SIGTERM


@pytest.fixture(scope="module")
def cut_short(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CutShort:
    """A drain whose grace (2 s) is far shorter than the work: STREAMS heavy streams and four
    webhook jobs of 1,000 tokens in flight, then SIGTERM to the server's process group (the
    engine, in a group of its own, keeps serving). What is cut short must still end: streams
    when the server stops, webhook generations delivered as failed, with the reason, before
    the process exits 0."""
    env = {
        "DEEPINFRA_SERVE_SHUTDOWN_GRACE_S": "2",
        "DEEPINFRA_SERVE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2/32",
        # The streams and the webhook generations fill the model: flex requests wait.
        "DEEPINFRA_SERVE_MAX_CONCURRENT_REQUESTS": str(STREAMS + 4),
    }
    log = tmp_path_factory.mktemp("grace") / "grace.log"
    flex: list[httpx.Response] = []
    with receiving() as receiver:
        with server_process(TINY_CARD, cache_dir, log, env) as (url, proc):
            job = {"input": "Hi", "max_new_tokens": 1000, "webhook": receiver.url}
            scenario = _cut_short(url, proc, signals=1, jobs=job, group=True, flex=flex)
            results, stopped, queued = asyncio.run(scenario)
        delivered = list(receiver.bodies)
    return CutShort(
        results, stopped, proc.returncode, log.read_text(errors="replace"), queued, delivered, flex
    )


def test_a_group_sigterm_drains_until_the_grace_period_is_over(cut_short: CutShort) -> None:
    results, stopped = cut_short.results, cut_short.stopped
    # The drain is the server's: its line carries no request's id, whichever task the signal
    # interrupted.
    [drain] = [
        json.loads(line)
        for line in cut_short.log.splitlines()
        if line.startswith("{") and "SIGTERM: draining" in line
    ]
    assert drain["request_id"] is None
    # 2 s of grace, uvicorn's own 5 s for open connections (streams still running are cut),
    # then the engine's shutdown; the heavy streams alone would run for tens of seconds more.
    assert 2 <= stopped < 2 + 5 + 20
    assert cut_short.returncode == 0
    assert not all(_complete(lines) for lines in results)
    assert "grace period over with" in cut_short.log


def test_sigterm_answers_the_flex_requests_still_waiting(cut_short: CutShort) -> None:
    assert len(cut_short.flex) == FLEX_WAITERS
    for r in cut_short.flex:
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "shutting_down"


def test_sigterm_delivers_every_queued_webhook_exactly_once(cut_short: CutShort) -> None:
    delivered = [b["request_id"] for b in cut_short.delivered]
    queued, bodies = cut_short.queued, cut_short.delivered
    assert cut_short.returncode == 0
    assert sorted(delivered) == sorted(queued)  # each once
    for body in bodies:
        assert body["inference_status"]["status"] in ("succeeded", "failed")
        if body["inference_status"]["status"] == "failed":
            assert body["error"] == "the server shut down before the generation finished"
    assert any(b["inference_status"]["status"] == "failed" for b in bodies)
    assert "the server shut down before the generation finished" in cut_short.log


def test_a_second_sigterm_stops_at_once(cache_dir: Path, tmp_path: Path) -> None:
    with server_process(TINY_CARD, cache_dir, tmp_path / "twice.log") as (url, proc):
        results, stopped, _ = asyncio.run(_cut_short(url, proc, signals=2))
    # The default grace is 25 s; the second signal stops the server without waiting for it.
    assert stopped < 25
    assert proc.returncode == -signal.SIGTERM  # uvicorn stops, then re-raises the signal
    assert not all(_complete(lines) for lines in results)
