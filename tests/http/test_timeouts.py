"""A request past its time limit is aborted in the engine: 504 before the first byte, an error
event in a stream. The module's server ends killed outright, and leaves no engine process."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..helpers import (
    ABORT_BOUND_S,
    CHAT,
    HELLO,
    MODEL,
    TINY_CARD,
    killed_leaves_nothing,
    server_process,
    settles_to_zero,
    sse_lines,
)


@pytest.fixture(scope="module")
def server(
    cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A server whose request time limit (0.5 s) only the timeout test's long request meets."""
    log = tmp_path_factory.mktemp("timed") / "server.log"
    env = {"DEEPINFRA_SERVE_REQUEST_TIMEOUT_S": "0.5"}
    with server_process(TINY_CARD, cache_dir, log, env) as running:
        yield running


def test_request_timeout_aborts_the_engine_work(server: tuple[str, Any]) -> None:
    timed, _ = server
    # 960 greedy tokens, far more than 0.5 s of engine work. Greedy, because with the tiny
    # model's 512-token vocabulary a sampled run draws EOS within a few hundred tokens, at a
    # place that depends on the CPU's arithmetic.
    long = {"model": MODEL, "messages": HELLO, "max_tokens": 960, "temperature": 0}
    with httpx.Client(base_url=timed, timeout=30) as c:
        r = c.post(CHAT, json=long)
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "timeout"
        assert "timed out after 0.5 s" in r.json()["error"]["message"]
        with c.stream("POST", CHAT, json={**long, "stream": True}) as s:
            assert s.status_code == 200
            events = [line[6:] for line in sse_lines(s) if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "timeout"
        # Both timed-out requests were aborted in the engine.
        assert settles_to_zero(c) < ABORT_BOUND_S


def test_sigkill_of_the_server_leaves_no_engine_process(server: tuple[str, Any]) -> None:
    """Last of the module: the server killed as the kernel's OOM killer kills (its engine core,
    in a group of its own, dies with it); later servers on the same card start as usual."""
    killed_leaves_nothing(*server)
