"""The prompt format's call reading, whole and streamed (pure parsing, no engine)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

from deepinfra_serve.engine.function_calling.json_calls import CallScanner, read_calls
from deepinfra_serve.engine.function_calling.json_parser import JsonToolParser

NAMES = {"get_weather", "get_time"}
WEATHER = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
TIME = '{"name": "get_time", "arguments": {"zone": "CET"}}'
TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in NAMES
]


def test_an_array_of_calls() -> None:
    calls = read_calls(f"[{WEATHER}, {TIME}]", NAMES)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "CET"}),
    ]


def test_one_object_leading_whitespace_and_arguments_as_a_string() -> None:
    [call] = read_calls(
        '\n  {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}', NAMES
    )
    assert json.loads(call.arguments) == {"city": "Oslo"}


@pytest.mark.parametrize(
    "text",
    [
        "The weather is fine.",
        '{"answer": 42}',
        '[{"name": "launch_rockets", "parameters": {}}]',  # not one of the tools
        '[{"name": "get_weather", "parameters": [1]}]',  # arguments must be an object
        "[1, 2, 3]",
        '[{"name": "get_weather", "parameters": {"city": "Par',  # cut off
        "",
    ],
)
def test_what_is_not_a_call_is_content(text: str) -> None:
    assert read_calls(text, NAMES) == []


def test_calls_end_at_the_first_object_that_is_not_one() -> None:
    calls = read_calls(f'[{WEATHER}, {{"oops": 1}}, {TIME}] and some chatter', NAMES)
    assert [c.name for c in calls] == ["get_weather"]


def test_parallel_false_keeps_the_first_call() -> None:
    assert [c.name for c in read_calls(f"[{WEATHER}, {TIME}]", NAMES, parallel=False)] == [
        "get_weather"
    ]


def test_the_scanner_ignores_braces_and_quotes_inside_strings() -> None:
    tricky = '{"name": "get_weather", "parameters": {"city": "a}]{\\"b\\"[c"}}'
    scanner = CallScanner()
    for i in range(1, len(tricky) + 1):  # one character at a time
        scanner.feed(tricky[:i])
    assert scanner.objects == [tricky]


def _stream(text: str, step: int = 3, parallel: bool = True) -> list[dict[str, Any]]:
    """Feed `text` to the vLLM parser `step` characters at a time, as deltas arrive."""
    request = ChatCompletionRequest(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        tools=TOOLS,
        parallel_tool_calls=parallel,
    )
    parser = JsonToolParser(None, request.tools)
    out = []
    for i in range(0, len(text), step):
        prev, cur = text[:i], text[: i + step]
        msg = parser.extract_tool_calls_streaming(prev, cur, cur[i:], [], [], [], request)
        if msg is not None:
            out.append(msg.model_dump(exclude_none=True))
    if rest := parser.flush():
        out.append({"content": rest})
    return out


def test_streamed_calls_go_out_whole_as_each_object_closes() -> None:
    deltas = _stream(f"[{WEATHER}, {TIME}]")
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [
        (0, "get_weather"),
        (1, "get_time"),
    ]
    assert all(c["id"] and c["type"] == "function" for c in calls)
    assert json.loads(calls[1]["function"]["arguments"]) == {"zone": "CET"}
    assert not any(d.get("content") for d in deltas)


def test_streamed_text_is_content_as_it_comes() -> None:
    text = "  Hello there, no tools needed."
    deltas = _stream(text)
    assert "".join(d["content"] for d in deltas) == text
    assert len(deltas) > 3  # streamed, not held back


@pytest.mark.parametrize("text", ['{"answer": 42} is my reply', '[{"name": "get_weather", "par'])
def test_held_json_that_is_no_call_comes_out_as_content(text: str) -> None:
    deltas = _stream(text)
    assert "".join(d.get("content", "") for d in deltas) == text
    assert not any(d.get("tool_calls") for d in deltas)


def test_streamed_parallel_false_stops_after_one_call() -> None:
    deltas = _stream(f"[{WEATHER}, {TIME}]", parallel=False)
    assert [tc["function"]["name"] for d in deltas for tc in d["tool_calls"]] == ["get_weather"]
