"""POST /v1/openai/chat/completions on the real CPU engine (tiny random Llama)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from deepinfra_serve.config.cards import ModelCard
from deepinfra_serve.openai.responses import ChatCompletion, ChatCompletionChunk

from ..helpers import CHAT, HELLO, MODEL, stream, tiny_chat_prompt

CHEF = [
    {"role": "system", "content": "Respond like a michelin starred chef."},
    {"role": "user", "content": "Can you name at least two different techniques to cook lamb?"},
    {
        "role": "assistant",
        "content": "Bonjour! Let me tell you, my friend, cooking lamb is an art form. First, we "
        'have the classic "Sous Vide" method. Next, we have the ancient art of "Sous le Sable". '
        'And finally, we have the more modern technique of "Hot Smoking."',
    },
    {"role": "user", "content": "Tell me more about the second method."},
]


def chat(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post(CHAT, json={"model": MODEL, **body})


def sse_events(client: httpx.Client, **body: Any) -> list[str]:
    return stream(client, CHAT, ChatCompletionChunk, model=MODEL, **body)


def expected_cost(card: ModelCard, prompt: int, completion: int, cached: int = 0) -> float:
    p = card.pricing
    read = p.cache_read_usd_per_mtok
    assert read is not None
    uncached = prompt - cached
    return (
        uncached * p.input_usd_per_mtok + cached * read + completion * p.output_usd_per_mtok
    ) / 1e6


def test_health(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "model": MODEL}


def test_hello_example_has_the_documented_shape(client: httpx.Client, tiny_card: ModelCard) -> None:
    r = chat(client, messages=HELLO, max_tokens=16)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"id", "object", "created", "model", "service_tier", "choices", "usage"}
    assert body["service_tier"] == "default"  # none asked for: default, as billed
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    # The cached count is always there (0 for a prompt shorter than one cache block).
    assert list(usage) == [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "estimated_cost",
    ]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert 1 <= usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["estimated_cost"] == pytest.approx(
        expected_cost(tiny_card, usage["prompt_tokens"], usage["completion_tokens"]), abs=1e-12
    )
    ChatCompletion.model_validate(body)


def test_prompt_is_rendered_with_the_cards_chat_template(
    client: httpx.Client, tiny_card: ModelCard, cache_dir: Path
) -> None:
    expected = len(tiny_chat_prompt(cache_dir, tiny_card, CHEF))
    r = chat(client, messages=CHEF, max_tokens=4)
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == expected


def test_chef_conversation(client: httpx.Client) -> None:
    r = chat(client, messages=CHEF, max_tokens=32)
    assert r.status_code == 200
    body = ChatCompletion.model_validate(r.json())
    assert body.usage.prompt_tokens > 60
    assert body.choices[0].message.content is not None


def test_max_tokens_bounds_the_completion(client: httpx.Client) -> None:
    r = chat(client, messages=HELLO, max_tokens=1, temperature=0)
    body = r.json()
    assert body["usage"]["completion_tokens"] == 1
    assert body["choices"][0]["finish_reason"] == "length"


def test_n_choices(client: httpx.Client) -> None:
    r = chat(client, messages=HELLO, n=3, max_tokens=6, seed=7)
    assert r.status_code == 200
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert 3 <= body["usage"]["completion_tokens"] <= 18


def test_streaming_example(client: httpx.Client, tiny_card: ModelCard) -> None:
    events = sse_events(client, messages=HELLO, max_tokens=12, temperature=0)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(json.loads(e)) for e in events[:-1]]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.model == MODEL and c.object == "chat.completion.chunk" for c in chunks)
    *content, last = chunks
    assert content and all(c.choices[0].delta.role == "assistant" for c in content)
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in content)
    # DeepInfra: usage rides on the chunk that carries finish_reason.
    assert last.choices[0].finish_reason in ("stop", "length")
    assert last.usage is not None
    usage = last.usage
    assert usage.estimated_cost == pytest.approx(
        expected_cost(tiny_card, usage.prompt_tokens, usage.completion_tokens), abs=1e-12
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in content)
    whole = chat(client, messages=HELLO, max_tokens=12, temperature=0).json()
    assert streamed == whole["choices"][0]["message"]["content"]
    assert usage.completion_tokens == whole["usage"]["completion_tokens"]
    assert usage.prompt_tokens == whole["usage"]["prompt_tokens"]


def test_streaming_n_choices_finish_once_each(client: httpx.Client) -> None:
    events = sse_events(client, messages=HELLO, max_tokens=5, n=2, seed=1)
    chunks = [json.loads(e) for e in events[:-1]]
    finishes = [c for c in chunks if c["choices"][0]["finish_reason"] is not None]
    assert sorted(c["choices"][0]["index"] for c in finishes) == [0, 1]
    assert [("usage" in c) for c in finishes] == [False, True]


def test_stream_options_can_turn_usage_off(client: httpx.Client) -> None:
    events = sse_events(
        client, messages=HELLO, max_tokens=4, stream_options={"include_usage": False}
    )
    assert not any("usage" in json.loads(e) for e in events[:-1])


def test_unknown_model_is_404_naming_it(client: httpx.Client) -> None:
    r = client.post(
        "/v1/openai/chat/completions", json={"model": "nobody/nothing", "messages": HELLO}
    )
    assert r.status_code == 404
    error = r.json()["error"]
    assert "nobody/nothing" in error["message"]
    assert error["param"] == "model"
    assert error["code"] == "model_not_found"


def test_missing_model_field(client: httpx.Client) -> None:
    r = client.post("/v1/openai/chat/completions", json={"messages": HELLO})
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "model"


def test_malformed_json_is_400(client: httpx.Client) -> None:
    r = client.post(
        "/v1/openai/chat/completions",
        content=b'{"model": ',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert "JSON" in r.json()["error"]["message"]


def test_the_body_is_json_whatever_its_content_type(client: httpx.Client) -> None:
    # `curl -d` labels a body form-encoded; a JSON body is read as JSON all the same.
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}'
    for content_type in ("application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        r = client.post(
            "/v1/openai/chat/completions", content=body % MODEL.encode(), headers=headers
        )
        assert r.status_code == 200, content_type
        assert r.json()["usage"]["completion_tokens"] == 2
    r = client.post("/v1/openai/chat/completions", content=b"")
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Request body is required"
    r = client.post(f"/v1/inference/{MODEL}", content=b"[1, 2]")
    assert r.status_code == 422
    assert r.json() == {"error": "body: Input should be an object"}


def test_over_long_prompt_is_400_with_the_numbers(client: httpx.Client) -> None:
    long = [{"role": "user", "content": "lamb " * 1200}]
    r = chat(client, messages=long)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "context is 1024 tokens" in message
    assert "prompt tokens" in message


def test_models_lists_deepinfra_metadata(client: httpx.Client) -> None:
    for path in ("/v1/openai/models", "/v1/models"):
        body = client.get(path).json()
        assert body["object"] == "list"
        model, adapter = body["data"]  # the model, then its LoRA adapter
        assert (adapter["id"], adapter["parent"]) == (f"{MODEL}-pirate", MODEL)
        assert model["id"] == MODEL and model["parent"] is None
        assert model["object"] == "model"
        assert model["owned_by"] == "deepinfra-serve"
        assert model["metadata"] == {
            "description": "A 2-layer random Llama for tests; its output is gibberish.",
            "context_length": 1024,
            "max_tokens": 1024,
            # The cache-read price, where the card sets one (absent otherwise:
            # test_prompt_cache.py).
            "pricing": {"input_tokens": 1.0, "output_tokens": 2.0, "cache_read_tokens": 0.25},
            "tags": ["test", "cpu", "tools"],  # the card calls functions
        }
        assert model["tags"] == ["test", "cpu", "tools"]
    assert client.get(f"/v1/openai/models/{MODEL}").json()["id"] == MODEL
    # As llama-index's DeepInfra integration asks (its api_base is .../v1): a top-level `tags`
    # with `tools` tells it the model can call functions.
    assert "tools" in client.get(f"/v1/models/{MODEL}").json()["tags"]
    assert client.get("/v1/openai/models/nobody/nothing").status_code == 404


def test_same_api_without_the_openai_segment(client: httpx.Client) -> None:
    r = client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 2}
    )
    assert r.status_code == 200
    assert r.json()["object"] == "chat.completion"


CONVERSATIONS = {
    "short": [{"role": "user", "content": " techniques" * 5}],
    # Over 2,048 characters (one token per " techniques" in the test tokenizer): vLLM's
    # thread pool on both sides.
    "long": [{"role": "user", "content": " techniques" * 200}],
    "turns": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Tell me about  lambs\n\nand chefs "},
    ],
    "specials and unicode": [
        {
            "role": "user",
            "content": "<|im_start|>system\nfaux<|im_end|> caf\u00e9 \u2028 \U0001f600",
        },
    ],
    "empty": [{"role": "user", "content": ""}],
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_inline_and_thread_pool_rendering_give_the_same_prompt(
    client: httpx.Client, name: str
) -> None:
    # A plain short conversation is rendered on the event loop by transformers' template
    # function and the Rust tokenizer; with template arguments (here an unused one) it goes
    # through vLLM's renderer on its thread pool. The same tokens either way.
    body = {
        "model": MODEL,
        "messages": CONVERSATIONS[name],
        "max_tokens": 4,
        "temperature": 0,
    }
    inline = client.post("/v1/openai/chat/completions", json=body).json()
    pooled = client.post(
        "/v1/openai/chat/completions", json={**body, "chat_template_kwargs": {"unused": 1}}
    ).json()
    assert inline["usage"]["prompt_tokens"] == pooled["usage"]["prompt_tokens"] > 1
    assert inline["choices"][0]["message"] == pooled["choices"][0]["message"]


def test_a_model_may_be_named_at_its_version(client: httpx.Client) -> None:
    body = {"messages": HELLO, "max_tokens": 2}
    assert client.post(CHAT, json={**body, "model": f"{MODEL}:1"}).status_code == 200
    native = client.post(f"/v1/inference/{MODEL}:1", json={"input": "Hi", "max_new_tokens": 2})
    assert native.status_code == 200
    other = client.post(CHAT, json={**body, "model": f"{MODEL}:2"})
    assert other.status_code == 404
    assert other.json()["error"] == {
        "message": f"The model `{MODEL}:2` does not exist: `{MODEL}` is served at version `1`",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
