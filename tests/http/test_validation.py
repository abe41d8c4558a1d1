"""Every out-of-range or malformed field gets a 4xx naming it; nothing reaches the engine."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ..helpers import HELLO, MODEL, engine_finished, engine_load

# DeepInfra's ranges, shared by chat and completions: (field, bad value).
SHARED = [
    ("temperature", -0.1),
    ("temperature", 2.01),
    ("top_p", 0),
    ("top_p", 1.01),
    ("min_p", -0.01),
    ("min_p", 1.01),
    ("top_k", -1),
    ("top_k", 1000),
    ("max_tokens", 1_000_001),
    ("n", 0),
    ("n", 5),
    ("presence_penalty", -2.01),
    ("presence_penalty", 2.01),
    ("frequency_penalty", -2.01),
    ("frequency_penalty", 2.01),
    ("repetition_penalty", 0.009),
    ("repetition_penalty", 5.01),
    ("seed", -(2**63) - 1),
    ("seed", 2**64),
    ("seed", "lucky"),
    ("stop", [str(i) for i in range(17)]),
    ("stop", [""]),
    ("stop", [1, 2]),
    ("response_format", {"type": "xml"}),
    ("response_format", {"type": "json_schema"}),
    ("response_format", {"type": "json_schema", "json_schema": {"schema": {"type": "bogus"}}}),
    ("response_format", {"type": "regex", "regex": "(unclosed"}),
    ("stream_options", {"include_usage": True}),  # without stream: true
    ("logit_bias", {"5": 100.5}),
    ("logit_bias", {"-1": 1}),
    ("logit_bias", {"five": 1}),
    ("logit_bias", [5]),
    ("n", 4),  # within DeepInfra's range, above the tiny card's max_n of 3
]

CHAT_ONLY = [
    ("max_tokens", -1),
    ("max_tokens", 0),
    ("messages", []),
    ("messages", [{"role": "wizard", "content": "hi"}]),
    ("messages", [{"role": "user"}]),
    ("messages", [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
    ("messages", [{"role": "tool", "content": "42"}]),  # no tool_call_id
    ("logprobs", "sure"),
    ("tools", [{"type": "retrieval", "function": {"name": "f"}}]),  # functions only
    ("tools", [{"type": "function", "function": {"name": "get weather"}}]),  # bad name
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]),
    ("tools", [{"type": "function", "function": {"name": "f"}}] * 2),  # twice the same name
    ("tools", [{"type": "function"}]),  # no function
    ("tool_choice", "required"),  # without tools
    ("tool_choice", "sometimes"),
    ("tool_choice", {"type": "function", "function": {}}),
    ("reasoning_effort", "extreme"),
    ("top_logprobs", 3),  # without logprobs: true
    ("top_logprobs", 21),
    ("top_logprobs", 0),
]

COMPLETIONS_ONLY = [
    ("max_tokens", 0),
    ("prompt", []),
    ("prompt", [-1]),
    ("prompt", [1, 100_000]),
    ("prompt", {"text": "hi"}),
    ("logprobs", 21),
    ("logprobs", -1),
    ("echo", True),  # together with logprobs, below
    ("stop_token_ids", list(range(17))),
    ("data", {"image": "data:image/png;base64,AAAA"}),
]


def _engine_requests(client: httpx.Client) -> tuple[float, float]:
    """(requests the engine has finished, requests it holds now), from vLLM's own metrics."""
    text = client.get("/metrics").text
    return engine_finished(text), engine_load(text)


@pytest.fixture(scope="module")
def engine_before(client: httpx.Client) -> tuple[float, float]:
    """The engine's counts before this module's first refusal (taken once it is idle)."""
    deadline = time.monotonic() + 30
    while (before := _engine_requests(client))[1]:  # earlier modules' work, finishing
        assert time.monotonic() < deadline, "the engine never went idle"
        time.sleep(0.1)
    return before


@pytest.fixture(autouse=True)
def _counted(engine_before: tuple[float, float]) -> None:
    """Taken before the module's first test."""


def _check(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].split(".")[0] == field
    assert field in error["message"]


@pytest.mark.parametrize(("field", "value"), SHARED + CHAT_ONLY)
def test_chat_rejects(client: httpx.Client, field: str, value: Any) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 4, field: value}
    _check(client.post("/v1/openai/chat/completions", json=body), field)


@pytest.mark.parametrize(("field", "value"), SHARED + COMPLETIONS_ONLY)
def test_completions_rejects(client: httpx.Client, field: str, value: Any) -> None:
    body: dict[str, Any] = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, field: value}
    if field == "echo":
        body["logprobs"] = 1
    _check(client.post("/v1/openai/completions", json=body), field)


@pytest.mark.parametrize("path", ["/v1/openai/chat/completions", "/v1/openai/completions"])
def test_engine_grammar_errors_are_400_naming_response_format(
    client: httpx.Client, path: str
) -> None:
    # Python compiles this pattern; the engine's grammar compiler has no look-behind.
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 4,
        "response_format": {"type": "regex", "regex": "(?<=a)b"},
    }
    body.update({"messages": HELLO} if "chat" in path else {"prompt": "Hello"})
    r = client.post(path, json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "response_format"


def test_completions_over_long_prompt_gives_the_numbers(client: httpx.Client) -> None:
    r = client.post(
        "/v1/openai/completions", json={"model": MODEL, "prompt": list(range(5, 505)) * 3}
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith(
        "Requested 1500 prompt tokens, the model's context is 1024 tokens"
    )


def test_nothing_reached_the_engine_and_it_still_serves(
    client: httpx.Client, engine_before: tuple[float, float]
) -> None:
    # Every refusal above happened before the engine: it finished and holds what it did before.
    assert _engine_requests(client) == engine_before
    r = client.post(
        "/v1/openai/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 2}
    )
    assert r.status_code == 200
    assert client.get("/health").status_code == 200
