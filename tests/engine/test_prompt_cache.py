"""Prompt caching as clients see it and pay for it, on the real CPU engine: the engine's own
count of cached prompt tokens reaches every API's usage (streamed and not), is billed at the
card's cache-read price, and reaches the access line and the metrics; each API key's requests
are salted apart unless the operator shares the cache (`tests/http/test_auth.py`,
`test_api_processes.py`); Anthropic-style cache marks are accepted and change nothing, a
retention time is refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from deepinfra_serve.config.cards import ModelCard, load_card
from deepinfra_serve.native.schema import StreamEvent
from deepinfra_serve.openai.responses import ChatCompletionChunk
from deepinfra_serve.openai.routes import model_out

from ..helpers import (
    CHAT,
    COMPLETIONS,
    DEMO_CARD,
    INFERENCE,
    MODEL,
    json_log,
    long_text,
    metric_sum,
    sse_events,
)


def _block_size(client: httpx.Client) -> int:
    """The engine's cache block, from vLLM's own cache-config metric."""
    found = re.search(
        r'vllm:cache_config_info\{[^}]*block_size="(\d+)"', client.get("/metrics").text
    )
    assert found, "vLLM exports its cache config"
    return int(found[1])


def _cost(card: ModelCard, prompt: int, completion: int, cached: int) -> float:
    p = card.pricing
    assert p.cache_read_usd_per_mtok is not None  # the tiny card prices cached tokens apart
    usd = (prompt - cached) * p.input_usd_per_mtok + cached * p.cache_read_usd_per_mtok
    return (usd + completion * p.output_usd_per_mtok) / 1e6


def _chat(
    client: httpx.Client,
    system: str,
    question: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> httpx.Response:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 3, "temperature": 0, **extra}
    return client.post(CHAT, json=body, headers=headers)


def test_cached_prompt_tokens_are_reported_and_billed_on_every_api(
    client: httpx.Client, tiny_card: ModelCard, server_log: Path
) -> None:
    block = _block_size(client)
    moved = metric_sum(client.get("/metrics").text, "deepinfra_prompt_cached_tokens_total")
    system = long_text()

    # Chat: a miss, then a hit on the shared system prompt, whole and streamed.
    first = _chat(client, system, "What is first?").json()["usage"]
    r = _chat(client, system, "And what comes second?")
    second = r.json()["usage"]
    events = sse_events(
        client.post(
            CHAT,
            json={
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": "And third?"},
                ],
                "max_tokens": 3,
                "stream": True,
            },
        ),
        ChatCompletionChunk,
    )
    streamed = next(e["usage"] for e in events if e.get("usage"))
    assert first["prompt_tokens"] > 2 * block
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    for usage in (second, streamed):
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        assert 0 < cached <= usage["prompt_tokens"]
        assert cached % block == 0  # whole blocks of the engine's cache
        assert usage["estimated_cost"] == pytest.approx(
            _cost(tiny_card, usage["prompt_tokens"], usage["completion_tokens"], cached),
            abs=1e-12,
        )
    assert first["estimated_cost"] == pytest.approx(
        _cost(tiny_card, first["prompt_tokens"], first["completion_tokens"], 0), abs=1e-12
    )
    print(f"chat: {first['prompt_tokens']} prompt tokens; cached {second} / {streamed}")

    # Completions: the same, on a prompt of its own.
    text = long_text()
    body = {"model": MODEL, "prompt": text, "max_tokens": 2, "temperature": 0}
    missed = client.post(COMPLETIONS, json=body).json()["usage"]
    hit = client.post(COMPLETIONS, json={**body, "prompt": text + " again"}).json()["usage"]
    assert missed["prompt_tokens_details"]["cached_tokens"] == 0
    assert hit["prompt_tokens_details"]["cached_tokens"] > 0
    assert hit["estimated_cost"] == pytest.approx(
        _cost(
            tiny_card,
            hit["prompt_tokens"],
            hit["completion_tokens"],
            hit["prompt_tokens_details"]["cached_tokens"],
        ),
        abs=1e-12,
    )

    # Native: inference_status, and the last streamed event's details.
    text = long_text()
    native = {"input": text, "max_new_tokens": 2}
    assert (
        client.post(INFERENCE, json=native).json()["inference_status"]["tokens_input_cached"] == 0
    )
    status = client.post(INFERENCE, json=native).json()["inference_status"]
    assert status["tokens_input_cached"] > 0
    assert status["cost"] == pytest.approx(
        _cost(
            tiny_card,
            status["tokens_input"],
            status["tokens_generated"],
            status["tokens_input_cached"],
        ),
        abs=1e-12,
    )
    last = sse_events(client.post(INFERENCE, json={**native, "stream": True}), StreamEvent)[-1]
    assert last["details"]["cached_input_tokens"] == status["tokens_input_cached"]

    # The access line and the metrics carry the same counts.
    rid = r.headers["x-request-id"]
    [line] = [e for e in json_log(server_log, '"message":"access"') if e["request_id"] == rid]
    assert line["cached_tokens"] == second["prompt_tokens_details"]["cached_tokens"]
    assert line["estimated_cost"] == second["estimated_cost"]
    counted = (
        second["prompt_tokens_details"]["cached_tokens"]
        + streamed["prompt_tokens_details"]["cached_tokens"]
        + hit["prompt_tokens_details"]["cached_tokens"]
        + 2 * status["tokens_input_cached"]
    )
    metrics = client.get("/metrics").text
    assert metric_sum(metrics, "deepinfra_prompt_cached_tokens_total") - moved == counted
    prices = {
        kind: metric_sum(metrics, "deepinfra_price_usd_per_mtok", model=MODEL, kind=kind)
        for kind in ("input", "cache_read", "output")
    }
    assert prices == {"input": 1.0, "cache_read": 0.25, "output": 2.0}


def test_cache_marks_are_accepted_and_a_retention_time_refused(client: httpx.Client) -> None:
    system = long_text(20)
    marked = {
        "model": MODEL,
        "max_tokens": 1,
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}
                ],
                "cache_control": {"type": "ephemeral"},
            },
            {"role": "user", "content": "Hi"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "lookup", "parameters": {"type": "object"}},
                "cache_control": {"type": "ephemeral"},
            }
        ],
    }
    plain = json.loads(json.dumps(marked).replace(', "cache_control": {"type": "ephemeral"}', ""))
    assert "cache_control" not in json.dumps(plain)
    r = client.post(CHAT, json=marked)
    assert r.status_code == 200, r.text
    # The marks do not reach the prompt.
    assert (
        r.json()["usage"]["prompt_tokens"]
        == client.post(CHAT, json=plain).json()["usage"]["prompt_tokens"]
    )
    marked["messages"][1]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    r = client.post(CHAT, json=marked)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["param"].endswith("cache_control.ttl")
    assert "cannot be guaranteed" in error["message"]


def test_a_card_without_a_cache_read_price_lists_none() -> None:
    # Its cached tokens cost the input price; the listing of one that sets it: test_chat.py.
    demo = model_out(load_card(DEMO_CARD), 0).model_dump(mode="json")
    assert demo["metadata"]["pricing"] == {"input_tokens": 0.01, "output_tokens": 0.02}
