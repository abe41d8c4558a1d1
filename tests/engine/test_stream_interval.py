"""A card may batch streamed tokens (vLLM's `stream_interval`: a streamed output every N
tokens, the first at once). The wire stays as documented: OpenAI chunks carry several tokens'
text, the native stream still has one event per token, and usage counts every token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import TINY_CARD, running_server
from tests.sse import sse_lines

MODEL = "deepinfra-serve/tiny-random-llama"
INTERVAL = 8
TOKENS = 40
HELLO = [{"role": "user", "content": "Hello!"}]


@pytest.fixture(scope="module")
def batched(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("interval")
    text = TINY_CARD.read_text()
    assert "  extra_args:\n" in text
    card = tmp / "card.yaml"
    card.write_text(
        text.replace("  extra_args:\n", f"  extra_args:\n    stream_interval: {INTERVAL}\n", 1)
    )
    with running_server(card, cache_dir, tmp / "server.log") as url:
        yield url


def _events(r: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[6:] for line in sse_lines(r) if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def test_openai_chunks_carry_several_tokens_and_the_same_text(batched: str) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": TOKENS, "temperature": 0}
    with httpx.Client(base_url=batched, timeout=60) as c:
        whole = c.post("/v1/openai/chat/completions", json=body).json()
        with c.stream("POST", "/v1/openai/chat/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            events = _events(r)
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
        events = _events(r)
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
            assert r.status_code == 200
            events = _events(r)
    assert len(events) == TOKENS
    assert all(e["token"]["text"] is not None and e["token"]["logprob"] <= 0 for e in events)
    last = events[-1]
    assert last["details"]["generated_tokens"] == TOKENS
    assert last["generated_text"] == whole["results"][0]["generated_text"]
    assert (
        "".join(e["token"]["text"] for e in events if not e["token"]["special"])
        == (last["generated_text"])
    )
