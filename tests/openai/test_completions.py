"""POST /v1/openai/completions on the real CPU engine."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from deepinfra_serve.config.cards import ModelCard
from deepinfra_serve.openai.responses import Completion, CompletionChunk

from ..helpers import COMPLETIONS, MODEL, events, stream


def test_completion_shape_and_cost(client: httpx.Client, tiny_card: ModelCard) -> None:
    r = client.post(
        "/v1/openai/completions", json={"model": MODEL, "prompt": "Hello", "max_tokens": 6}
    )
    assert r.status_code == 200
    body = Completion.model_validate(r.json())
    assert body.id.startswith("cmpl-") and body.object == "text_completion"
    assert body.choices[0].finish_reason in ("stop", "length")
    u = body.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    p = tiny_card.pricing
    expected = (
        u.prompt_tokens * p.input_usd_per_mtok + u.completion_tokens * p.output_usd_per_mtok
    ) / 1e6
    assert u.estimated_cost == pytest.approx(expected, abs=1e-12)


def test_token_id_prompt(client: httpx.Client) -> None:
    r = client.post(
        "/v1/openai/completions", json={"model": MODEL, "prompt": [1, 44, 73], "max_tokens": 3}
    )
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == 3


def test_streaming_matches_the_whole_completion(client: httpx.Client) -> None:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 10, "temperature": 0, "echo": True}
    data = stream(client, COMPLETIONS, CompletionChunk, **body)
    assert data[-1] == "[DONE]"
    chunks = [CompletionChunk.model_validate(json.loads(e)) for e in data[:-1]]
    assert chunks[0].choices[0].text == "Hello"  # the echo comes first
    assert chunks[-1].choices[0].finish_reason is not None and chunks[-1].usage is not None
    streamed = "".join(c.choices[0].text for c in chunks)
    whole = client.post("/v1/openai/completions", json=body).json()
    assert streamed == whole["choices"][0]["text"]
    assert chunks[-1].usage.completion_tokens == whole["usage"]["completion_tokens"]


def test_continuous_usage_stats_put_usage_on_every_chunk(client: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "prompt": "Hello",
        "max_tokens": 5,
        "seed": 3,  # the count is asserted exactly: no early EOS by chance
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    counts = [
        e["usage"]["completion_tokens"]
        for e in events(stream(client, COMPLETIONS, CompletionChunk, **body))
    ]
    assert counts == sorted(counts) and counts[-1] == 5


def test_openai_client_completions(base_url: str) -> None:
    oai = openai.OpenAI(base_url=f"{base_url}/v1/openai", api_key="unused", max_retries=0)
    resp = oai.completions.create(model=MODEL, prompt="Hello", max_tokens=4, logprobs=1, seed=3)
    assert resp.choices[0].logprobs is not None
    assert len(resp.choices[0].logprobs.tokens or []) == 4
    streamed = list(
        oai.completions.create(model=MODEL, prompt="Hello", max_tokens=4, stream=True, seed=3)
    )
    assert streamed[-1].choices[0].finish_reason == "length"
