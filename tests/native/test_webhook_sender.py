"""Retry and backoff of webhook delivery. The remote target is the test double here (respx)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
import respx

from deepinfra_serve.config.tiers import DEFAULT, TierPolicy
from deepinfra_serve.engine.call import Outcome
from deepinfra_serve.engine.errors import APIError
from deepinfra_serve.engine.lifecycle import Lifecycle
from deepinfra_serve.http.auth import ApiKeys, KeyEntry
from deepinfra_serve.http.capacity import Capacity
from deepinfra_serve.native.schema import InferenceResponse, InferenceStatus
from deepinfra_serve.native.webhook_targets import WebhookTargets
from deepinfra_serve.native.webhooks import WebhookSender
from deepinfra_serve.observability.record import RequestRecord

HOOK = "https://hooks.example.com/done"


def Sender(**settings: Any) -> WebhookSender:
    return WebhookSender(
        model="test", lifecycle=Lifecycle("test"), targets=WebhookTargets(), **settings
    )


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr("deepinfra_serve.native.webhooks.asyncio.sleep", fake_sleep)
    return delays


@respx.mock
async def test_delivers_once_on_success(sleeps: list[float]) -> None:
    route = respx.post(HOOK).mock(return_value=httpx.Response(200))
    sender = Sender(attempts=4, backoff_s=1.0)
    assert await sender.deliver(HOOK, b'{"ok": true}') is True
    assert route.call_count == 1
    assert route.calls[0].request.content == b'{"ok": true}'
    assert route.calls[0].request.headers["content-type"] == "application/json"
    assert sleeps == []
    await sender.aclose()


@respx.mock
async def test_retries_errors_with_doubling_backoff(sleeps: list[float]) -> None:
    route = respx.post(HOOK).mock(
        side_effect=[
            httpx.Response(503),
            httpx.ConnectError("refused"),
            httpx.Response(429),
            httpx.Response(204),
        ]
    )
    sender = Sender(attempts=4, backoff_s=0.5)
    assert await sender.deliver(HOOK, b"{}") is True
    assert route.call_count == 4
    assert sleeps == [0.5, 1.0, 2.0]
    await sender.aclose()


@respx.mock
async def test_gives_up_after_its_attempts(sleeps: list[float]) -> None:
    route = respx.post(HOOK).mock(side_effect=httpx.ReadTimeout("slow"))
    sender = Sender(attempts=3, backoff_s=1.0, timeout_s=2.0)
    assert await sender.deliver(HOOK, b"{}") is False
    assert route.call_count == 3
    assert sleeps == [1.0, 2.0]
    await sender.aclose()


@respx.mock
async def test_client_errors_are_retried_too(sleeps: list[float]) -> None:
    # DeepInfra retries deliveries on 4xx and 5xx alike.
    route = respx.post(HOOK).mock(side_effect=[httpx.Response(404), httpx.Response(200)])
    sender = Sender(attempts=2, backoff_s=0.1)
    assert await sender.deliver(HOOK, b"{}") is True
    assert route.call_count == 2
    await sender.aclose()


@respx.mock
async def test_redirects_are_not_followed(sleeps: list[float]) -> None:
    respx.post(HOOK).mock(
        return_value=httpx.Response(302, headers={"location": "http://10.0.0.1/"})
    )
    other = respx.post("http://10.0.0.1/").mock(return_value=httpx.Response(200))
    sender = Sender(attempts=1)
    assert await sender.deliver(HOOK, b"{}") is False
    assert other.call_count == 0
    await sender.aclose()


@respx.mock
async def test_a_job_holds_a_slot_while_it_generates_then_delivers() -> None:
    route = respx.post(HOOK).mock(return_value=httpx.Response(200))
    sender = Sender()
    lifecycle = sender.lifecycle
    capacity = Capacity(TierPolicy.of(None, 4), lifecycle, 1, "test")
    [tenant] = ApiKeys([KeyEntry("k")]).tenants
    release = asyncio.Event()
    # The request that asks for the webhook holds a place until it is answered, at once; its
    # job (`Call.detach`) takes the same place again first and keeps it while it generates.
    record = RequestRecord("r1", "test")
    record.place = capacity.take(tenant, DEFAULT)
    held = record.place.again()

    async def generate() -> Outcome:
        try:
            await release.wait()
            answer = InferenceResponse(
                request_id="r1", inference_status=InferenceStatus(status="succeeded")
            )
            return Outcome(200, answer, None, record)
        finally:
            held.release()

    sender.submit(HOOK, "r1", generate(), lambda reason: b"failed")
    record.place.release()
    await asyncio.sleep(0)
    # The generation keeps the model's place and its key's.
    assert (lifecycle.in_flight, lifecycle.background, sender.pending) == (1, 1, 1)
    assert capacity.counts() == (1, 0) and capacity._counts[3] == 1
    release.set()
    while sender.pending:
        await asyncio.sleep(0.01)
    assert (lifecycle.in_flight, lifecycle.background) == (0, 0)
    assert capacity.counts() == (0, 0) and capacity._counts[3] == 0
    [delivered] = [orjson.loads(c.request.content) for c in route.calls]
    assert delivered["request_id"] == "r1"
    assert delivered["inference_status"]["status"] == "succeeded"
    await sender.aclose()


@respx.mock
async def test_a_job_whose_generation_fails_delivers_failed_with_the_reason() -> None:
    route = respx.post(HOOK).mock(return_value=httpx.Response(200))
    sender = Sender()

    async def refused() -> Outcome:
        error = APIError(400, "the prompt is longer than the context")
        return Outcome(400, None, error, RequestRecord("r1", "test"))

    sender.submit(HOOK, "r1", refused(), lambda reason: reason.encode())
    while sender.pending:
        await asyncio.sleep(0.01)
    assert [c.request.content for c in route.calls] == [
        b"the generation failed: the prompt is longer than the context"
    ]
    await sender.aclose()


@respx.mock
async def test_shutdown_delivers_unfinished_generations_as_failed_once() -> None:
    route = respx.post(HOOK).mock(return_value=httpx.Response(200))
    sender = Sender()

    async def never() -> Outcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    for i in range(3):
        sender.submit(HOOK, f"r{i}", never(), lambda reason: reason.encode())
    await asyncio.sleep(0)
    await sender.aclose()
    assert sender.pending == 0 and sender.lifecycle.in_flight == 0
    assert [c.request.content for c in route.calls] == [
        b"the server shut down before the generation finished"
    ] * 3
