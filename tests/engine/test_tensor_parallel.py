"""Tensor parallelism across two CPU worker processes, as the MythoMax card runs on two GPUs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import TINY_CARD, json_log, running_server


@pytest.fixture(scope="module")
def tp2(cache_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    card = tmp_path / "tiny-tp2.yaml"
    card.write_text(
        TINY_CARD.read_text().replace("tensor_parallel_size: 1", "tensor_parallel_size: 2")
    )
    log = tmp_path / "tp2.log"
    # This server also puts prompts and outputs in its access lines (off by default).
    with running_server(card, cache_dir, log, {"DEEPINFRA_SERVE_LOG_CONTENT": "true"}) as url:
        yield url, log


@pytest.fixture(scope="module")
def tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tp2")


def test_two_ranks_serve_a_chat_completion(tp2: tuple[str, Path]) -> None:
    url, log = tp2
    r = httpx.post(
        f"{url}/v1/openai/chat/completions",
        json={
            "model": "deepinfra-serve/tiny-random-llama",
            "messages": [{"role": "user", "content": "Hello!"}],
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=60,
    )
    assert r.status_code == 200
    assert r.json()["usage"]["completion_tokens"] >= 1
    rid = r.headers["x-request-id"]

    def access_lines() -> list[dict]:
        return [r for r in json_log(log, f'"request_id":"{rid}"') if r["message"] == "access"]

    deadline = time.monotonic() + 5  # the line is written as the response's last byte goes
    while not access_lines() and time.monotonic() < deadline:
        time.sleep(0.05)
    [access] = access_lines()
    text = log.read_text(errors="replace")
    assert access["content"] == {
        "messages": [{"role": "user", "content": "Hello!"}],
        "output": [r.json()["choices"][0]["message"]["content"]],
    }
    assert "tensor_parallel_size=2" in text
    # Two worker processes, one per rank.
    assert "VllmWorker-0" in text and "VllmWorker-1" in text
