"""Webhook jobs count toward the concurrency limit, and none is lost on SIGTERM; each on a
server of its own, delivering to a receiver on 127.0.0.2."""

from __future__ import annotations

import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.api.test_webhooks import Receiver
from tests.server import TINY_CARD, server_process

URL = "/v1/inference/deepinfra-serve/tiny-random-llama"
ALLOW = {"DEEPINFRA_SERVE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2/32"}


def _engine_load(text: str) -> int:
    """Requests the engine holds, running or waiting, from vLLM's own gauges."""
    total = 0.0
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting"):
        total += sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M))
    return int(total)


def _serve_receiver(receiver: Receiver) -> threading.Thread:
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    return thread


def test_a_burst_of_webhook_requests_gets_429_beyond_the_limit(
    cache_dir: Path, tmp_path: Path
) -> None:
    limit = 3
    env = {**ALLOW, "DEEPINFRA_SERVE_MAX_CONCURRENT_REQUESTS": str(limit)}
    receiver = Receiver()
    _serve_receiver(receiver)
    body = {"input": "Once upon a time", "max_new_tokens": 600, "webhook": receiver.url}
    try:
        with server_process(TINY_CARD, cache_dir, tmp_path / "burst.log", env) as (url, _):
            loads: list[int] = []
            sampling = threading.Event()

            def sample() -> None:
                with httpx.Client(base_url=url, timeout=5) as c:
                    while not sampling.is_set():
                        loads.append(_engine_load(c.get("/metrics").text))
                        time.sleep(0.02)

            sampler = threading.Thread(target=sample)
            sampler.start()
            with httpx.Client(base_url=url, timeout=30) as c, ThreadPoolExecutor(12) as pool:
                statuses = list(pool.map(lambda _: c.post(URL, json=body).status_code, range(12)))
                accepted = statuses.count(200)
                receiver.wait_for(lambda: len(receiver.bodies) >= accepted, timeout=120)
            sampling.set()
            sampler.join()
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    assert set(statuses) == {200, 429}
    assert 1 <= accepted <= limit
    assert max(loads) <= limit
    assert len(receiver.bodies) == accepted
    assert {b["inference_status"]["status"] for b in receiver.bodies} == {"succeeded"}


def test_sigterm_delivers_every_queued_webhook_exactly_once(
    cache_dir: Path, tmp_path: Path
) -> None:
    # A drain grace far shorter than the generations: they are cut short and must be
    # delivered as failed, with the reason, before the process exits.
    env = {**ALLOW, "DEEPINFRA_SERVE_SHUTDOWN_GRACE_S": "0.5"}
    receiver = Receiver()
    _serve_receiver(receiver)
    log = tmp_path / "sigterm-webhooks.log"
    try:
        with server_process(TINY_CARD, cache_dir, log, env) as (url, proc):
            with httpx.Client(base_url=url, timeout=30) as c:
                queued = [
                    c.post(
                        URL, json={"input": "Hi", "max_new_tokens": 1000, "webhook": receiver.url}
                    ).json()["request_id"]
                    for _ in range(4)
                ]
            proc.send_signal(signal.SIGTERM)
            returncode = proc.wait(timeout=60)
        delivered = [b["request_id"] for b in receiver.bodies]
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    assert returncode == 0
    assert sorted(delivered) == sorted(queued)  # each once
    for body in receiver.bodies:
        assert body["inference_status"]["status"] in ("succeeded", "failed")
        if body["inference_status"]["status"] == "failed":
            assert body["error"] == "the server shut down before the generation finished"
    assert any(b["inference_status"]["status"] == "failed" for b in receiver.bodies)
    assert "the server shut down before the generation finished" in log.read_text()
