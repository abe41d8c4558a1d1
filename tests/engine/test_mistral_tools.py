"""Mistral's own tool format on the real engine: a tiny random Mistral with Mistral-Nemo's
tokenizer (tekken), served like the Mistral-Nemo card (tokenizer_mode mistral, vLLM's mistral
tool parser)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import mistral_common
import pytest
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from deepinfra_serve.openai.responses import ChatCompletionChunk

from .. import helpers
from ..helpers import (
    ASK,
    CARDS,
    CHAT,
    MISTRAL,
    SCHEMAS,
    TOOLS,
    WEATHER,
    assemble,
    events,
    running_server,
)

ASKED = {"model": MISTRAL, "messages": ASK, "tools": TOOLS, "max_tokens": 200}
TEKKEN = Path(mistral_common.__file__).parent / "data" / "tekken_240718.json"


@pytest.fixture(scope="module")
def mistral(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("mistral") / "mistral.log"
    with (
        running_server(CARDS / "dev" / "tiny-mistral.yaml", cache_dir, log) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        yield client


def chat(client: httpx.Client, **body: Any) -> dict[str, Any]:
    return helpers.chat(client, **(ASKED | body))


def mistral_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
    """What mistral_common itself makes of the conversation: Mistral-Nemo's prompt."""
    tokenizer = MistralTokenizer.from_file(str(TEKKEN))
    request = ChatCompletionRequest.from_openai(messages, tools)
    return len(tokenizer.encode_chat_completion(request).tokens)


HISTORY = [
    *ASK,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "a1b2c3d4e",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "a1b2c3d4e", "content": "21 C, sunny"},
]


@pytest.mark.parametrize("messages", [ASK, HISTORY], ids=["ask", "history"])
def test_tools_calls_and_results_are_rendered_the_mistral_way(
    mistral: httpx.Client, messages: list[dict[str, Any]]
) -> None:
    used = chat(mistral, messages=messages, max_tokens=1)["usage"]["prompt_tokens"]
    assert used == mistral_tokens(messages, TOOLS)
    plain = chat(mistral, messages=messages, tools=None, max_tokens=1)["usage"]["prompt_tokens"]
    assert used > plain + 50  # [AVAILABLE_TOOLS] with both schemas


def test_long_call_ids_keep_their_last_nine_characters(mistral: httpx.Client) -> None:
    long = json.loads(json.dumps(HISTORY).replace("a1b2c3d4e", "call_0a1b2c3d4e"))
    used = chat(mistral, messages=long, max_tokens=1)["usage"]["prompt_tokens"]
    assert used == mistral_tokens(HISTORY, TOOLS)


@pytest.mark.parametrize(
    "forced",
    [
        {"tool_choice": "required", "parallel_tool_calls": False},
        {"tool_choice": {"type": "function", "function": {"name": "get_time"}}},
    ],
)
def test_forced_calls_come_back_as_mistral_tool_calls(
    mistral: httpx.Client, forced: dict[str, Any]
) -> None:
    body = chat(mistral, **forced, temperature=0)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert len(call["id"]) == 9 and call["id"].isalnum()  # Mistral's id format
    name = call["function"]["name"]
    if "function" in forced["tool_choice"]:
        assert name == "get_time"
    jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[name])

    data = helpers.stream(mistral, CHAT, ChatCompletionChunk, **(ASKED | forced), temperature=0)
    assert data[-1] == "[DONE]"
    content, calls, reason = assemble(events(data))
    assert reason == "tool_calls" and not content.strip()
    assert [c["name"] for c in calls] == [name]
    assert json.loads(calls[0]["arguments"]) == json.loads(call["function"]["arguments"])


def test_auto_without_a_call_is_text(mistral: httpx.Client) -> None:
    body = chat(mistral, tools=[WEATHER], seed=3, max_tokens=16)
    choice = body["choices"][0]
    assert choice["message"]["tool_calls"] is None
    assert choice["finish_reason"] in ("stop", "length")
    assert choice["message"]["content"]
