"""Tensor parallelism across two CPU worker processes, as the MythoMax card runs on two GPUs
(the package's `variant` server)."""

from __future__ import annotations

from pathlib import Path

import httpx

from ..helpers import CHAT, HELLO, MODEL, eventually, json_log


def test_two_ranks_serve_a_chat_completion(variant: tuple[str, Path]) -> None:
    url, log = variant
    r = httpx.post(
        f"{url}{CHAT}",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 8, "temperature": 0},
        timeout=60,
    )
    assert r.status_code == 200
    assert r.json()["usage"]["completion_tokens"] >= 1
    rid = r.headers["x-request-id"]

    def access_lines() -> list[dict]:
        return [r for r in json_log(log, f'"request_id":"{rid}"') if r["message"] == "access"]

    eventually(access_lines)  # the line is written as the response's last byte goes
    [access] = access_lines()
    text = log.read_text(errors="replace")
    assert access["content"] == {
        "messages": [{"role": "user", "content": "Hello!"}],
        "output": [r.json()["choices"][0]["message"]["content"]],
    }
    assert "tensor_parallel_size=2" in text
    # Two worker processes, one per rank.
    assert "VllmWorker-0" in text and "VllmWorker-1" in text
