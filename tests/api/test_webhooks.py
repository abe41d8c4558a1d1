"""Webhook delivery from the real server to a real HTTP receiver on the loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

MODEL = "deepinfra-serve/tiny-random-llama"
URL = f"/v1/inference/{MODEL}"


class Receiver:
    """Records every POST; answers 500 to the first `fail_first`, or never when `hang`."""

    def __init__(self, fail_first: int = 0, hang: bool = False) -> None:
        self.fail_first = fail_first
        self.hang = hang
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                payload = json.loads(self.rfile.read(length))
                receiver.attempts += 1
                if receiver.hang:
                    receiver.release.wait(10)
                    return
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.bodies.append(payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def wait_for(self, condition: Any, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out waiting for the webhook"
            time.sleep(0.05)


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = Receiver(**getattr(request, "param", {}))
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.release.set()
    r.server.shutdown()
    r.server.server_close()


def test_answers_queued_then_posts_the_result(client: httpx.Client, receiver: Receiver) -> None:
    r = client.post(URL, json={"input": "Hello", "max_new_tokens": 5, "webhook": receiver.url})
    assert r.status_code == 200
    queued = r.json()
    assert queued["inference_status"]["status"] == "queued"
    assert queued["results"] == []
    receiver.wait_for(lambda: receiver.bodies)
    [delivered] = receiver.bodies
    assert delivered["request_id"] == queued["request_id"]
    assert delivered["inference_status"]["status"] == "succeeded"
    assert delivered["inference_status"]["tokens_generated"] == 5
    assert delivered["num_tokens"] == 5
    assert isinstance(delivered["results"][0]["generated_text"], str)


@pytest.mark.parametrize("receiver", [{"fail_first": 2}], indirect=True)
def test_failed_deliveries_are_retried(client: httpx.Client, receiver: Receiver) -> None:
    client.post(URL, json={"input": "Hi", "max_new_tokens": 2, "webhook": receiver.url})
    receiver.wait_for(lambda: receiver.bodies)
    assert receiver.attempts == 3
    assert receiver.bodies[0]["inference_status"]["status"] == "succeeded"


@pytest.mark.parametrize("receiver", [{"hang": True}], indirect=True)
def test_a_webhook_that_never_answers_costs_only_its_retry_budget(
    client: httpx.Client, receiver: Receiver
) -> None:
    # The session's server allows 4 attempts of 1 s each, with 0.05 s doubling backoff.
    started = time.monotonic()
    client.post(URL, json={"input": "Hi", "max_new_tokens": 2, "webhook": receiver.url})
    receiver.wait_for(lambda: receiver.attempts == 4, timeout=15)
    assert time.monotonic() - started < 10
    # Meanwhile and afterwards the server serves as usual, and it tries no fifth time.
    assert client.get("/health").status_code == 200
    time.sleep(2)
    assert receiver.attempts == 4
