"""Anthropic's Messages API on the real engine, through the official `anthropic` SDK with only
its base URL changed."""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import httpx
import pytest

from ..helpers import ABORT_BOUND_S, MODEL, metric_sum, running, settles_to_zero

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def sdk(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{base_url}/anthropic", api_key="unused", max_retries=0)


def _ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_a_message_and_its_stream_say_the_same(sdk: anthropic.Anthropic) -> None:
    args: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 12,
        # The SDK (2.17) has no sampling parameters of its own any more: they go as extra body.
        "extra_body": {"temperature": 0},
        "system": "You are terse.",
        "messages": _ask("Hello there"),
    }
    message = sdk.messages.create(**args)
    assert message.id.startswith("msg_") and message.type == "message"
    assert message.role == "assistant" and message.model == MODEL
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 12
    [block] = message.content
    assert block.type == "text" and block.text
    with sdk.messages.stream(**args) as stream:
        events = list(stream)
        final = stream.get_final_message()
    streamed = "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "text_delta"
    )
    assert streamed == block.text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 12
    [delta] = [e for e in events if e.type == "message_delta"]
    cost = message.usage.model_extra["estimated_cost"]
    assert delta.usage.model_extra["estimated_cost"] == cost > 0


def test_the_stream_sends_anthropics_events_in_order(base_url: str) -> None:
    body = {"model": MODEL, "max_tokens": 3, "messages": _ask("Hi"), "stream": True}
    with httpx.stream("POST", f"{base_url}/anthropic/v1/messages", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
    assert events[:2] == ["message_start", "ping"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(events[2:-3]) <= {"content_block_start", "content_block_delta"}


def test_count_tokens_is_what_the_message_sends(sdk: anthropic.Anthropic) -> None:
    # A prompt no earlier request began with: nothing of it is in the prefix cache.
    messages = _ask(f"{uuid.uuid4().hex} count me, then answer")
    counted = sdk.messages.count_tokens(model=MODEL, messages=messages, system="Be brief.")
    message = sdk.messages.create(model=MODEL, max_tokens=1, messages=messages, system="Be brief.")
    assert counted.input_tokens == message.usage.input_tokens > 0
    assert message.usage.cache_read_input_tokens == 0


def test_stop_sequences_end_with_the_one_that_matched(sdk: anthropic.Anthropic) -> None:
    args: dict[str, Any] = {
        "model": MODEL,
        "extra_body": {"temperature": 0},
        "messages": _ask("Go on"),
    }
    text = sdk.messages.create(max_tokens=16, **args).content[0].text
    stop = next(text[i : i + 2] for i in range(4, len(text) - 2) if text[i : i + 2].strip())
    message = sdk.messages.create(max_tokens=16, stop_sequences=[stop], **args)
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == stop
    assert message.content[0].text == text[: text.index(stop)]


def test_a_tool_round_trip(sdk: anthropic.Anthropic) -> None:
    ask = _ask("What is the weather in Paris?")
    called = sdk.messages.create(
        model=MODEL,
        max_tokens=300,
        messages=ask,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert called.stop_reason == "tool_use"
    [use] = [b for b in called.content if b.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input["city"], str)
    assert use.id.startswith("toolu_")
    with sdk.messages.stream(
        model=MODEL,
        max_tokens=300,
        messages=ask,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        # Greedy: sampled, the random model's arguments now and then outrun max_tokens.
        extra_body={"temperature": 0},
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    assert [b.type for b in streamed.content][-1] == "tool_use"
    answer = sdk.messages.create(
        model=MODEL,
        max_tokens=4,
        tools=[WEATHER],
        messages=[
            *ask,
            {"role": "assistant", "content": [b.model_dump() for b in called.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"},
                    {"type": "text", "text": "Thanks; summarise."},
                ],
            },
        ],
    )
    assert answer.stop_reason in ("max_tokens", "end_turn", "tool_use")


def test_bad_requests_raise_the_sdks_typed_errors(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.UnprocessableEntityError) as bad:
        sdk.messages.create(
            model=MODEL, max_tokens=4, messages=_ask("Hi"), extra_body={"temperature": 5}
        )
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    assert bad.value.body["error"]["message"].startswith("temperature:")
    with pytest.raises(anthropic.NotFoundError) as unknown:
        sdk.messages.create(model="nobody/nothing", max_tokens=4, messages=_ask("Hi"))
    assert unknown.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "The model `nobody/nothing` does not exist",
        },
    }
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    with pytest.raises(anthropic.UnprocessableEntityError) as unread:
        sdk.messages.create(
            model=MODEL, max_tokens=4, messages=[{"role": "user", "content": [image]}]
        )
    message = unread.value.body["error"]["message"]
    assert message.startswith("messages.0.content: block 0 is image") and "text only" in message
    with pytest.raises(anthropic.UnprocessableEntityError) as thinking:
        sdk.messages.create(
            model=MODEL,
            max_tokens=4,
            messages=_ask("Hi"),
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    assert "thinking" in thinking.value.body["error"]["message"]


def test_cache_marks_and_tool_schemas_are_checked_as_the_chat_api_checks_them(
    client: httpx.Client,
) -> None:
    mark = {"type": "ephemeral"}
    block = {"type": "text", "text": "Hi", "cache_control": mark}
    body = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": [block]}]}
    assert client.post("/anthropic/v1/messages", json=body).status_code == 200
    mark["ttl"] = "1h"
    refused = client.post("/anthropic/v1/messages", json=body)
    assert refused.status_code == 422
    chat = client.post(
        "/v1/openai/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": [block]}]},
    )
    assert chat.status_code == 422
    assert chat.json()["error"]["param"].endswith("content.0.cache_control.ttl")
    # The chat API's refusal, word for word.
    why = chat.json()["error"]["message"].rpartition("cache_control.ttl: ")[2]
    assert why.startswith("a cache retention time cannot be guaranteed")
    assert f"cache_control.ttl: {why}" in refused.json()["error"]["message"]
    tool = {"name": "f", "input_schema": {"type": "object", "properties": {"a": {"type": 5}}}}
    body = {"model": MODEL, "max_tokens": 1, "messages": _ask("Hi"), "tools": [tool]}
    bad_schema = client.post("/anthropic/v1/messages", json=body).json()["error"]
    assert bad_schema["message"].startswith("tools.0.input_schema: not a valid JSON schema")
    tool["input_schema"] = {"type": "string"}
    not_object = client.post("/anthropic/v1/messages", json=body).json()["error"]
    assert "must be a JSON schema of type object" in not_object["message"]


def test_messages_are_metered_as_their_own_api(base_url: str, sdk: anthropic.Anthropic) -> None:
    def served() -> float:
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
        return metric_sum(text, "deepinfra_requests_total", api="messages", status="200")

    before = served()
    sdk.messages.create(model=MODEL, max_tokens=1, messages=_ask("Hi"))
    assert served() == before + 1


def test_a_stream_closed_by_its_client_aborts_the_engine_request(
    client: httpx.Client, base_url: str
) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 900,
        "messages": _ask("Tell me everything"),
        "stream": True,
        "temperature": 0,  # greedy: long by construction (this prompt draws no early end)
    }
    whole = client.post("/anthropic/v1/messages", json={**body, "stream": False}).json()
    assert whole["usage"]["output_tokens"] == 900  # it would run to its end
    with (
        httpx.Client(base_url=base_url, timeout=30) as other,
        other.stream("POST", "/anthropic/v1/messages", json=body) as r,
    ):
        assert next(r.iter_lines()) == "event: message_start"
        assert running(client) > 0
    # Leaving the block closed the connection mid-stream.
    assert settles_to_zero(client) < ABORT_BOUND_S
