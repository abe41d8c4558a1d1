"""Function calling in the prompt format, on the real engine (tiny random Llama).

The random model cannot choose to call a tool, so what it shows is the machinery: forced calls
(required, a named function) always come back as calls whose arguments validate against the
function's schema; auto reads calls when the answer is written as calls (a response_format
makes the random model write one) and passes text through otherwise; history is rendered.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from jinja2 import Template

from deepinfra_serve.config.cards import ModelCard
from deepinfra_serve.openai.responses import ChatCompletionChunk

from .. import helpers
from ..helpers import ASK, CHAT, MODEL, SCHEMAS, TIME, TOOLS, WEATHER, assemble, events

ASKED = {"messages": ASK, "tools": TOOLS, "max_tokens": 300}


def chat(client: httpx.Client, **body: Any) -> dict[str, Any]:
    return helpers.chat(client, **(ASKED | body))


def stream(client: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    data = helpers.stream(client, CHAT, ChatCompletionChunk, **({"model": MODEL} | ASKED | body))
    assert data[-1] == "[DONE]"
    return events(data)


def assert_valid_call(name: str, arguments: str) -> None:
    assert name in SCHEMAS
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_gives_calls_that_validate(client: httpx.Client, seed: int) -> None:
    body = chat(client, tool_choice="required", seed=seed, temperature=1)
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["tool_calls"]
    for call in message["tool_calls"]:
        assert call["type"] == "function" and call["id"]
        assert_valid_call(call["function"]["name"], call["function"]["arguments"])
    assert len({c["id"] for c in message["tool_calls"]}) == len(message["tool_calls"])


def test_required_without_parallel_calls_gives_one(client: httpx.Client) -> None:
    for seed in range(4):
        body = chat(client, tool_choice="required", parallel_tool_calls=False, seed=seed)
        assert len(body["choices"][0]["message"]["tool_calls"]) == 1


def test_named_function_is_the_one_called(client: httpx.Client) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    body = chat(client, tool_choice=named, seed=4, n=2)
    assert len(body["choices"]) == 2
    for choice in body["choices"]:
        [call] = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "get_time"
        assert_valid_call("get_time", call["function"]["arguments"])
        assert choice["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    "forced",
    [
        {"tool_choice": "required", "parallel_tool_calls": False},
        {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    ],
)
def test_streamed_call_matches_the_whole_one(client: httpx.Client, forced: Any) -> None:
    # Greedy, so that both runs take the same path whatever the prefix cache holds.
    whole_body = chat(client, **forced, temperature=0)
    whole = whole_body["choices"][0]
    chunks = stream(client, **forced, temperature=0)
    content, calls, reason = assemble(chunks)
    assert reason == "tool_calls" and content == ""
    expected = whole["message"]["tool_calls"]
    assert [c["name"] for c in calls] == [c["function"]["name"] for c in expected]
    for got, want in zip(calls, expected, strict=True):
        assert got["id"]
        assert json.loads(got["arguments"]) == json.loads(want["function"]["arguments"])
    # Arguments stream in pieces as they are generated; every chunk is OpenAI's shape.
    pieces = [tc for c in chunks for ch in c["choices"] for tc in ch["delta"].get("tool_calls", [])]
    assert len(pieces) > len(calls)
    assert chunks[-1]["usage"] == whole_body["usage"]


def test_forced_call_cut_by_max_tokens_is_text_with_length(client: httpx.Client) -> None:
    body = chat(client, tool_choice="required", max_tokens=3, seed=1)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["tool_calls"] is None
    assert choice["message"]["content"].startswith("[")


# Under auto the model decides; a response_format holding the call shape makes the random model
# answer with a call, which shows auto's reading of calls from free output.
CALL_SHAPE = {
    "type": "json_schema",
    "json_schema": {
        "name": "call",
        "schema": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"const": "get_weather"},
                    "parameters": WEATHER["function"]["parameters"],
                },
                "required": ["name", "parameters"],
                "additionalProperties": False,
            },
        },
    },
}


def test_auto_reads_a_call_written_by_the_model(client: httpx.Client) -> None:
    body = chat(client, response_format=CALL_SHAPE, temperature=0)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert_valid_call("get_weather", call["function"]["arguments"])
    assert choice["message"]["content"] is None

    content, calls, reason = assemble(stream(client, response_format=CALL_SHAPE, temperature=0))
    assert (content, reason) == ("", "tool_calls")
    assert json.loads(calls[0]["arguments"]) == json.loads(call["function"]["arguments"])


def test_auto_passes_text_through(client: httpx.Client) -> None:
    body = chat(client, tool_choice="auto", temperature=0, max_tokens=24)
    choice = body["choices"][0]
    assert choice["message"]["tool_calls"] is None
    assert choice["finish_reason"] in ("stop", "length")
    content, calls, reason = assemble(
        stream(client, tool_choice="auto", temperature=0, max_tokens=24)
    )
    assert calls == [] and reason == choice["finish_reason"]
    assert content == choice["message"]["content"]


def _prompt_tokens(client: httpx.Client, **body: Any) -> int:
    return chat(client, max_tokens=1, **body)["usage"]["prompt_tokens"]


def test_tools_are_described_to_the_model_unless_choice_is_none(client: httpx.Client) -> None:
    plain = client.post(
        "/v1/openai/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 1}
    ).json()["usage"]["prompt_tokens"]
    assert _prompt_tokens(client, tool_choice="none") == plain
    described = _prompt_tokens(client, tool_choice="auto")
    assert described > plain + 100
    # A forced choice adds its instruction to the description.
    assert _prompt_tokens(client, tool_choice="required") > described


def test_a_function_named_auto_can_be_forced(client: httpx.Client) -> None:
    auto_fn = {"type": "function", "function": {**TIME["function"], "name": "auto"}}
    named = {"type": "function", "function": {"name": "auto"}}
    described = _prompt_tokens(client, tools=[auto_fn], tool_choice="auto")
    # The "you must call auto" sentence is written, and the answer is a call of `auto`.
    assert _prompt_tokens(client, tools=[auto_fn], tool_choice=named) > described
    body = chat(client, tools=[auto_fn], tool_choice=named, seed=3)
    [call] = body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "auto"
    jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS["get_time"])


HISTORY = [
    {"role": "system", "content": "Be brief."},
    *ASK,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"zone": "CET", "hour": 9}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "21 C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": "09:00"},
]


def test_calls_and_results_are_rendered_into_the_prompt(
    client: httpx.Client, tiny_card: ModelCard
) -> None:
    """The prompt the model sees is exactly the text format: the card's template over the
    rewritten conversation (checked by tokenizing that text through the completions API)."""
    assert tiny_card.tool_calling is not None and tiny_card.chat_template is not None
    tools_line = "\n".join(json.dumps(t["function"]) for t in TOOLS)
    expected = [
        {
            "role": "system",
            "content": "Be brief.\n\n"
            + tiny_card.tool_calling.prompt.replace("{tools}", tools_line),
        },
        *ASK,
        {
            "role": "assistant",
            "content": '[{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}, '
            '{"name": "get_time", "parameters": {"zone": "CET", "hour": 9}}]',
        },
        {
            "role": "user",
            "content": "Result of get_weather (call call_1):\n21 C, sunny\n\n"
            "Result of get_time (call call_2):\n09:00",
        },
    ]
    text = Template(tiny_card.chat_template).render(messages=expected, add_generation_prompt=True)
    completion = client.post(
        "/v1/openai/completions", json={"model": MODEL, "prompt": text, "max_tokens": 1}
    ).json()
    got = _prompt_tokens(client, messages=HISTORY)
    assert got == completion["usage"]["prompt_tokens"]


def test_history_without_tools_is_rendered_too(client: httpx.Client) -> None:
    r = client.post(
        "/v1/openai/chat/completions",
        json={"model": MODEL, "messages": HISTORY, "max_tokens": 4},
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] > 60


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            {"tool_choice": {"type": "function", "function": {"name": "get_stock"}}},
            "tool_choice",
            "get_stock",
        ),
        (
            {"tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
            "forced",
        ),
        ({"logprobs": True}, "logprobs", "tools"),
    ],
)
def test_inconsistent_tool_requests_are_422(
    client: httpx.Client, body: dict[str, Any], field: str, words: str
) -> None:
    r = client.post(
        "/v1/openai/chat/completions",
        json={"model": MODEL, "messages": ASK, "tools": TOOLS, **body},
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == field and words in error["message"]


def test_a_schema_the_grammar_cannot_enforce_is_400_naming_tools(client: httpx.Client) -> None:
    counted = {
        "type": "function",
        "function": {
            "name": "count",
            "parameters": {
                "type": "object",
                "properties": {"n": {"type": "integer", "multipleOf": 3}},
            },
        },
    }
    r = client.post(
        "/v1/openai/chat/completions",
        json={"model": MODEL, "messages": ASK, "tools": [counted], "tool_choice": "required"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "tools"
    assert "not supported" in r.json()["error"]["message"]


def test_openai_client_tool_calls(base_url: str) -> None:
    oai = openai.OpenAI(base_url=f"{base_url}/v1/openai", api_key="unused", max_retries=0)
    resp = oai.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", seed=2, max_tokens=300
    )
    message = resp.choices[0].message
    assert resp.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls
    for call in message.tool_calls:
        assert_valid_call(call.function.name, call.function.arguments)

    named = {"type": "function", "function": {"name": "get_weather"}}
    events = oai.chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice=named, seed=2, stream=True
    )
    arguments, reasons = "", []
    for event in events:
        for choice in event.choices:
            for tc in choice.delta.tool_calls or []:
                assert tc.index == 0
                arguments += tc.function.arguments or ""
            reasons.append(choice.finish_reason)
    assert reasons[-1] == "tool_calls"
    assert_valid_call("get_weather", arguments)

    # The conversation goes on with the result, as agents do.
    follow = oai.chat.completions.create(
        model=MODEL,
        messages=[
            *ASK,
            message.model_dump(exclude_none=True),
            *(
                {"role": "tool", "tool_call_id": c.id, "content": "21 C"}
                for c in message.tool_calls
            ),
        ],
        tools=TOOLS,
        max_tokens=8,
    )
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")
