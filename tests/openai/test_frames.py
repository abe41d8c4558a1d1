"""The frames of a stream are written as bytes, for speed; here they are held to the models
that document them. A chat stream's content deltas are spliced into the choice's JSON: the
bytes must be exactly what serialising the choice whole gives."""

from __future__ import annotations

import json

import httpx
import orjson
import pytest
from vllm.outputs import CompletionOutput

from deepinfra_serve.engine.errors import engine_dead, timed_out
from deepinfra_serve.openai.chat import _delta
from deepinfra_serve.openai.errors import OpenAIError, stream_error
from deepinfra_serve.openai.responses import ChatCompletionChunk, CompletionChunk

from ..helpers import ASK, CHAT, COMPLETIONS, HELLO, MODEL, TOOLS, events, stream

TEXTS = [" Paris", 'say "hi"\\', "line\nbreak\ttab\x00\x1f", "\u2028\u0085é😀", "</script>"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("index", [0, 3])
def test_a_spliced_content_delta_is_the_choice_serialised(text: str, index: int) -> None:
    o = CompletionOutput(index, text, [7], None, None, None)
    whole = {
        "index": index,
        "delta": {"role": "assistant", "content": text},
        "finish_reason": None,
        "logprobs": None,
    }
    assert _delta(o) == orjson.dumps(whole)
    assert json.loads(_delta(o)) == whole  # type: ignore[arg-type]


def test_an_empty_delta_sends_nothing() -> None:
    assert _delta(CompletionOutput(0, "", [7], None, None, None)) is None


# Every kind of frame the stream formatters write as bytes, from the real server, each proved
# against the documented chunk model (which refuses keys it does not declare): `stream` checks
# every event; each case checks that its kind was there.

CHAT_FRAMES = {
    "content": ({"max_tokens": 8, "temperature": 0}, lambda c: c["delta"].get("content")),
    "logprobs": ({"max_tokens": 4, "logprobs": True, "seed": 1}, lambda c: c["logprobs"]),
    "tool calls": (
        {"messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 300, "seed": 1},
        lambda c: c["delta"].get("tool_calls"),
    ),
    "finish": ({"max_tokens": 2, "n": 2, "seed": 1}, lambda c: c["finish_reason"]),
}


@pytest.mark.parametrize("kind", CHAT_FRAMES)
def test_each_kind_of_chat_frame_matches_its_model(client: httpx.Client, kind: str) -> None:
    body, present = CHAT_FRAMES[kind]
    body = {"model": MODEL, "messages": HELLO, **body}
    data = stream(client, CHAT, ChatCompletionChunk, **body)
    assert data[-1] == "[DONE]"
    chunks = events(data)
    assert any(present(c) for chunk in chunks for c in chunk["choices"]), kind
    assert "usage" in chunks[-1]


def test_usage_on_every_chunk_matches_the_model(client: httpx.Client) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    for path, schema, body in (
        (CHAT, ChatCompletionChunk, {"messages": HELLO}),
        (COMPLETIONS, CompletionChunk, {"prompt": "Hello", "logprobs": 2}),
    ):
        data = stream(
            client, path, schema, model=MODEL, max_tokens=3, stream_options=options, **body
        )
        assert all("usage" in chunk for chunk in events(data))


def test_an_error_event_matches_the_error_model_and_ends_the_stream() -> None:
    for err in (timed_out(0.5), engine_dead()):
        frames = stream_error(err).decode().split("\n\n")
        assert frames[-1] == ""  # each frame ends with a blank line
        data = [f.removeprefix("data: ") for f in frames[:-1]]
        OpenAIError.model_validate_json(data[0])
        assert data[1:] == ["[DONE]"]
