"""Tenants and service tiers on the guarded server's real engine: a key held to its own limit
while others are served, `/v1/me/rate_limit`, priority admitted on its reserve and scheduled
first, flex on idle capacity only, and the tier echoed exactly as billed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from ..helpers import (
    CHAT,
    COMPLETIONS,
    GUARDED_AUTH,
    GUARDED_ENGINE_SEQS,
    GUARDED_FLEX_WAIT_S,
    GUARDED_KEY_LIMIT,
    GUARDED_LIMIT,
    HELLO,
    MODEL,
    metric_sum,
)

A = {"Authorization": "Bearer secret-from-file"}  # its own limit: 2
B = {"Authorization": "Bearer secret-inline-2"}  # the default key limit
LONG = {"model": MODEL, "messages": HELLO, "max_tokens": 1000, "temperature": 0, "stream": True}
SHORT = {"model": MODEL, "messages": HELLO, "max_tokens": 2}
RATE_LIMITED = {
    "error": {
        "message": "Rate limited",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limited",
    }
}


async def _metrics(ac: httpx.AsyncClient, name: str, **labels: str) -> float:
    return metric_sum((await ac.get("/metrics")).text, name, **labels)


async def _until(ac: httpx.AsyncClient, name: str, value: float, **labels: str) -> None:
    deadline = time.monotonic() + 20
    while await _metrics(ac, name, **labels) != value:
        assert time.monotonic() < deadline, f"{name}{labels} never reached {value}"
        await asyncio.sleep(0.02)


def test_a_key_past_its_own_limit_is_rate_limited_while_another_is_served(
    guarded: tuple[str, Path],
) -> None:
    url, _ = guarded

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as ac:
            held = [ac.stream("POST", CHAT, json=LONG, headers=A) for _ in range(2)]
            streams = [await h.__aenter__() for h in held]
            assert [r.status_code for r in streams] == [200] * GUARDED_KEY_LIMIT
            third = await ac.post(CHAT, json=SHORT, headers=A)
            native = await ac.post(f"/v1/inference/{MODEL}", json={"input": "Hi"}, headers=A)
            flex = await ac.post(CHAT, json={**SHORT, "service_tier": "flex"}, headers=A)
            other = await ac.post(CHAT, json=SHORT, headers=B)  # B is served meanwhile
            for h in held:
                await h.__aexit__(None, None, None)
            await _until(ac, "deepinfra_requests_in_flight", 0, api="chat")
            again = await ac.post(CHAT, json=SHORT, headers=A)  # its places came back
        assert third.status_code == 429 and third.headers["retry-after"] == "1"
        assert third.json() == RATE_LIMITED  # not "Model busy": the model had room
        assert native.status_code == 429 and native.json() == {"error": "Rate limited"}
        assert flex.status_code == 429 and flex.json() == RATE_LIMITED  # no waiting past it
        assert other.status_code == 200 and again.status_code == 200

    asyncio.run(scenario())


def test_me_rate_limit_answers_the_callers_own_limits(guarded: tuple[str, Path]) -> None:
    url, _ = guarded
    with httpx.Client(base_url=url, timeout=10) as c:
        a = c.get("/v1/me/rate_limit", headers=A)
        b = c.get("/v1/me/rate_limit", headers={"x-api-key": "secret-inline-2"})
        anonymous = c.get("/v1/me/rate_limit")
        doc = c.get("/openapi.json").json()
    assert a.status_code == 200
    assert a.json() == {"rate_limit": GUARDED_KEY_LIMIT, "tpm_rate_limit": 0}
    assert b.json() == {"rate_limit": 200, "tpm_rate_limit": 0}
    assert anonymous.status_code == 401
    assert anonymous.json() == {"error": "Missing API key: send Authorization: Bearer <key>"}
    schema = doc["paths"]["/v1/me/rate_limit"]["get"]["responses"]["200"]["content"]
    assert schema["application/json"]["schema"]["$ref"].endswith("/RateLimitOut")


def _cost(usage: dict[str, Any], multiplier: float) -> float:
    """The tiny card's prices: 1.0 input, 0.25 cached input, 2.0 output per million."""
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    base = (usage["prompt_tokens"] - cached) * 1.0 + cached * 0.25
    return round((base + usage["completion_tokens"] * 2.0) * multiplier / 1e6, 12)


@pytest.mark.parametrize(
    ("tier", "multiplier"), [(None, 1.0), ("default", 1.0), ("priority", 1.5), ("flex", 0.8)]
)
def test_the_tier_echoed_is_the_tier_billed(
    guarded: tuple[str, Path], tier: str | None, multiplier: float
) -> None:
    url, _ = guarded
    extra = {} if tier is None else {"service_tier": tier}
    with httpx.Client(base_url=url, timeout=60, headers=B) as c:
        whole = c.post(CHAT, json={**SHORT, **extra}).json()
        text = c.post(COMPLETIONS, json={"model": MODEL, "prompt": "Hi", "max_tokens": 3, **extra})
        with c.stream("POST", CHAT, json={**SHORT, **extra, "stream": True}) as s:
            chunks = [
                orjson.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")
            ]
    applied = tier or "default"
    for body in (whole, text.json(), *chunks):
        assert body["service_tier"] == applied
    for usage in (whole["usage"], text.json()["usage"], chunks[-1]["usage"]):
        assert usage["estimated_cost"] == _cost(usage, multiplier)


def test_a_tier_the_api_does_not_know_is_refused_naming_the_field(
    guarded: tuple[str, Path],
) -> None:
    url, _ = guarded
    r = httpx.post(f"{url}{CHAT}", json={**SHORT, "service_tier": "auto"}, headers=B, timeout=10)
    assert r.status_code == 422 and r.json()["error"]["param"] == "service_tier"


def test_priority_is_admitted_while_default_is_busy_and_is_scheduled_first(
    guarded: tuple[str, Path],
) -> None:
    url, _ = guarded
    first_token: dict[str, float] = {}

    async def stream(ac: httpx.AsyncClient, name: str, body: dict[str, Any]) -> list[bytes]:
        async with ac.stream("POST", CHAT, json=body) as r:
            assert r.status_code == 200, name
            first_token[name] = time.monotonic()  # the headers go out with the first token
            return [line async for line in r.aiter_bytes()]

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=GUARDED_AUTH) as ac:
            # The engine runs 3; the 4th default waits in its queue; the model's limit is held.
            held = [ac.stream("POST", CHAT, json=LONG) for _ in range(GUARDED_ENGINE_SEQS)]
            running = [await h.__aenter__() for h in held]
            assert [r.status_code for r in running] == [200] * GUARDED_ENGINE_SEQS
            waiting = asyncio.ensure_future(stream(ac, "default", {**LONG, "max_tokens": 5}))
            await _until(ac, "vllm:num_requests_waiting", 1)
            busy = await ac.post(CHAT, json=SHORT)
            priority = asyncio.ensure_future(
                stream(ac, "priority", {**LONG, "max_tokens": 5, "service_tier": "priority"})
            )
            await _until(ac, "vllm:num_requests_waiting", 2)  # behind the default, in time
            over = await ac.post(CHAT, json={**SHORT, "service_tier": "priority"})
            await held[0].__aexit__(None, None, None)  # one place in the engine frees
            frames = await asyncio.wait_for(priority, 30)
            await asyncio.wait_for(waiting, 30)
            for h in held[1:]:
                await h.__aexit__(None, None, None)
            text = (await ac.get("/metrics")).text
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "model_busy"
        # Priority's reserve is one request above the limit of 4: the next one is busy too.
        assert over.status_code == 429 and over.json()["error"]["code"] == "model_busy"
        assert first_token["priority"] < first_token["default"]
        assert b'"service_tier":"priority"' in b"".join(frames)
        labels = {"model": MODEL, "tier": "priority"}
        assert metric_sum(text, "deepinfra_tier_requests_total", outcome="admitted", **labels)
        assert metric_sum(text, "deepinfra_tier_time_to_first_token_seconds_count", **labels)
        assert metric_sum(text, "deepinfra_tier_estimated_cost_usd_total", **labels) > 0

    asyncio.run(scenario())


def test_flex_fills_idle_room_waits_behind_default_and_leaves_on_disconnect(
    guarded: tuple[str, Path],
) -> None:
    url, _ = guarded
    flex = {**SHORT, "max_tokens": 20, "service_tier": "flex"}

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=GUARDED_AUTH) as ac:

            async def outcomes(tier: str, outcome: str) -> float:
                return await _metrics(
                    ac, "deepinfra_tier_requests_total", tier=tier, outcome=outcome
                )

            busy, timeouts = (
                await outcomes("default", "model_busy"),
                await outcomes("flex", "flex_timeout"),
            )
            # Idle: flex is admitted at once, up to its share (2 of 4).
            idle = [ac.stream("POST", CHAT, json={**LONG, "service_tier": "flex"}) for _ in "ab"]
            assert [(await h.__aenter__()).status_code for h in idle] == [200, 200]
            # Default still gets the whole limit beside them: never refused because of flex.
            defaults = [
                asyncio.ensure_future(ac.post(CHAT, json={**LONG, "stream": False}))
                for _ in range(GUARDED_LIMIT)
            ]
            await _until(ac, "deepinfra_requests_in_flight", 6, api="chat")
            assert await outcomes("default", "model_busy") == busy
            # The limit is default's: a flex request now waits, and past its bound gets 429.
            late = await ac.post(CHAT, json=flex)
            # One whose client goes away leaves the queue at once.
            gone = asyncio.ensure_future(ac.post(CHAT, json=flex))
            await _until(ac, "deepinfra_flex_waiting_requests", 1)
            gone.cancel()
            await _until(ac, "deepinfra_flex_waiting_requests", 0)
            # One that waits is served once default's requests end (their clients go).
            served = asyncio.ensure_future(ac.post(CHAT, json=flex))
            await _until(ac, "deepinfra_flex_waiting_requests", 1)
            for task in defaults:
                task.cancel()
            for h in idle:
                await h.__aexit__(None, None, None)
            done = await asyncio.wait_for(served, 30)
            after = await outcomes("flex", "flex_timeout")
        assert late.status_code == 429 and late.headers["retry-after"] == "1"
        assert late.json()["error"]["code"] == "flex_capacity_unavailable"
        assert f"within {GUARDED_FLEX_WAIT_S} s" in late.json()["error"]["message"]
        assert after - timeouts == 1  # the one that left was not timed out
        assert done.status_code == 200 and done.json()["service_tier"] == "flex"

    asyncio.run(scenario())


def test_the_messages_api_takes_the_key_as_x_api_key_or_bearer(guarded: tuple[str, Path]) -> None:
    url, _ = guarded
    base = f"{url}/anthropic"
    for client in (
        anthropic.Anthropic(base_url=base, api_key="secret-inline-2", max_retries=0),
        anthropic.Anthropic(base_url=base, auth_token="secret-inline-2", max_retries=0),
    ):
        message = client.messages.create(
            model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "Hi"}]
        )
        assert message.type == "message"
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "Hi"}]
        )
    assert wrong.value.body["error"] == {
        "type": "authentication_error",
        "message": "Invalid API key",
    }
