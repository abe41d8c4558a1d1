"""A card may batch streamed tokens (vLLM's `stream_interval`: a streamed output every N
tokens, the first at once). The wire stays as documented: OpenAI chunks carry several tokens'
text, the native stream still has one event per token, and usage counts every token."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from deepinfra_serve.native.schema import StreamEvent
from deepinfra_serve.openai.responses import ChatCompletionChunk, CompletionChunk

from ..helpers import HELLO, MODEL, STREAM_INTERVAL, sse_events

INTERVAL = STREAM_INTERVAL
TOKENS = 40


@pytest.fixture(scope="module")
def batched(variant: tuple[str, Path]) -> str:
    return variant[0]


def test_openai_chunks_carry_several_tokens_and_the_same_text(batched: str) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": TOKENS, "temperature": 0}
    with httpx.Client(base_url=batched, timeout=60) as c:
        whole = c.post("/v1/openai/chat/completions", json=body).json()
        with c.stream("POST", "/v1/openai/chat/completions", json={**body, "stream": True}) as r:
            events = sse_events(r, ChatCompletionChunk)
    contents = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    texts = [t for t in contents if t]
    assert "".join(texts) == whole["choices"][0]["message"]["content"]
    # The first token at once, then one output per INTERVAL tokens (the last one may be short).
    assert 2 <= len(texts) <= 1 + -(-(TOKENS - 1) // INTERVAL)
    assert events[-1]["usage"]["completion_tokens"] == TOKENS
    assert events[-1]["choices"][0]["finish_reason"] == "length"


def test_completion_logprobs_still_cover_every_token(batched: str) -> None:
    body = {
        "model": MODEL,
        "prompt": "Hello",
        "max_tokens": TOKENS,
        "temperature": 0,
        "logprobs": 1,
        "stream": True,
    }
    with httpx.stream("POST", f"{batched}/v1/openai/completions", json=body, timeout=60) as r:
        events = sse_events(r, CompletionChunk)
    tokens = [
        t
        for e in events
        if e["choices"]
        for t in (e["choices"][0]["logprobs"] or {}).get("tokens", [])
    ]
    assert len(tokens) == TOKENS
    assert events[-1]["usage"]["completion_tokens"] == TOKENS


def test_the_native_stream_keeps_one_event_per_token(batched: str) -> None:
    body = {"input": "Hello", "max_new_tokens": TOKENS, "temperature": 0, "stream": True}
    with httpx.Client(base_url=batched, timeout=60) as c:
        whole = c.post(f"/v1/inference/{MODEL}", json={**body, "stream": False}).json()
        with c.stream("POST", f"/v1/inference/{MODEL}", json=body) as r:
            events = sse_events(r, StreamEvent)
    assert len(events) == TOKENS
    assert all(e["token"]["text"] is not None and e["token"]["logprob"] <= 0 for e in events)
    last = events[-1]
    assert last["details"]["generated_tokens"] == TOKENS
    assert last["generated_text"] == whole["results"][0]["generated_text"]
    assert (
        "".join(e["token"]["text"] for e in events if not e["token"]["special"])
        == (last["generated_text"])
    )
