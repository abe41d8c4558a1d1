"""Admission on the guarded server: past its concurrency limit a request gets 429 and the
engine never holds more, webhook generations included."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ..helpers import (
    CHAT,
    GUARDED_AUTH,
    GUARDED_LIMIT,
    HELLO,
    INFERENCE,
    MODEL,
    engine_load,
    metric_sum,
    receiving,
)

IN_FLIGHT = "deepinfra_requests_in_flight"

LIMIT = GUARDED_LIMIT


def test_the_concurrency_limit_is_forced_429_and_the_engine_never_holds_more(
    guarded: tuple[str, Path],
) -> None:
    url, _ = guarded
    long = {"model": MODEL, "messages": HELLO, "max_tokens": 1000, "temperature": 0, "stream": True}
    short = {"model": MODEL, "messages": HELLO, "max_tokens": 2}

    async def scenario() -> tuple[list[httpx.Response], list[float]]:
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=GUARDED_AUTH) as ac:
            # The limit, taken (the engine runs 3 at once: the 4th waits in its queue).
            held = [asyncio.ensure_future(ac.post(CHAT, json=long)) for _ in range(LIMIT)]
            while metric_sum((await ac.get("/metrics")).text, IN_FLIGHT, api="chat") < LIMIT:
                await asyncio.sleep(0.02)
            refused = await asyncio.gather(*(ac.post(CHAT, json=short) for _ in range(8)))
            native = await ac.post(f"/v1/inference/{MODEL}", json={"input": "Hi"})
            engine = [engine_load((await ac.get("/metrics")).text) for _ in range(5)]
            assert not any(h.done() for h in held)
            for h in held:
                h.cancel()
            await asyncio.gather(*held, return_exceptions=True)
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
    with httpx.Client(base_url=url, timeout=60, headers=GUARDED_AUTH) as c:  # the slots came back
        deadline = time.monotonic() + 10
        while metric_sum(c.get("/metrics").text, IN_FLIGHT, api="chat") > 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert c.post(CHAT, json=short).status_code == 200


def test_a_burst_of_webhook_requests_gets_429_beyond_the_limit(
    guarded: tuple[str, Path],
) -> None:
    url, _ = guarded
    limit = LIMIT
    with receiving() as receiver:
        body = {"input": "Once upon a time", "max_new_tokens": 600, "webhook": receiver.url}
        loads: list[float] = []
        sampling = threading.Event()

        def sample() -> None:
            with httpx.Client(base_url=url, timeout=5) as c:
                while not sampling.is_set():
                    loads.append(engine_load(c.get("/metrics").text))
                    time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        with (
            httpx.Client(base_url=url, timeout=30, headers=GUARDED_AUTH) as c,
            ThreadPoolExecutor(12) as pool,
        ):
            statuses = list(pool.map(lambda _: c.post(INFERENCE, json=body).status_code, range(12)))
            accepted = statuses.count(200)
            receiver.wait_for(lambda: len(receiver.bodies) >= accepted, timeout=120)
        sampling.set()
        sampler.join()
    assert set(statuses) == {200, 429}
    assert 1 <= accepted <= limit
    assert max(loads) <= limit
    assert len(receiver.bodies) == accepted
    assert {b["inference_status"]["status"] for b in receiver.bodies} == {"succeeded"}
