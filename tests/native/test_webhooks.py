"""Webhook delivery from the real server to a real HTTP receiver on the loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..helpers import INFERENCE as URL
from ..helpers import Receiver, eventually, json_log, receiving


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    with receiving(**getattr(request, "param", {})) as r:
        yield r


def test_answers_queued_then_posts_the_result(client: httpx.Client, receiver: Receiver) -> None:
    body = {"input": "Hello", "max_new_tokens": 5, "seed": 3, "webhook": receiver.url}
    r = client.post(URL, json=body)
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


def test_a_webhook_job_writes_its_own_access_line_with_its_tokens_and_cost(
    client: httpx.Client, receiver: Receiver, server_log: Path
) -> None:
    body = {"input": "Hello", "max_new_tokens": 4, "webhook": receiver.url}
    queued = client.post(URL, json=body).json()
    rid = queued["request_id"]
    receiver.wait_for(lambda: receiver.bodies)
    [delivered] = receiver.bodies
    eventually(lambda: len(json_log(server_log, f'"request_id":"{rid}"')) == 2)
    http, job = sorted(json_log(server_log, f'"request_id":"{rid}"'), key=lambda e: "via" in e)
    # The HTTP request is answered at once: queued, no tokens, nothing billed.
    assert http["finish_reason"] == "queued" and http["completion_tokens"] == 0
    assert http["estimated_cost"] == 0
    # The job no client waits on: the same request id, its tokens and its cost.
    assert job["via"] == "background" and job["request_id"] == rid and job["status"] == 200
    assert job["path"] == http["path"] and job["api"] == "inference"
    assert job["completion_tokens"] == 4 == delivered["num_tokens"]
    assert job["prompt_tokens"] == delivered["num_input_tokens"]
    assert job["estimated_cost"] == delivered["inference_status"]["cost"] > 0


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


class SilentListener:
    """A loopback socket that counts the connections made to it: the loopback forms of the
    forbidden table aim here, and it must see none."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


# Every form is refused when the request arrives, before any connection is attempted; the
# loopback ones name the silent listener's port, so a connection would show.
FORBIDDEN = [
    "http://127.0.0.1:{port}/hook",
    "http://127.1:{port}/hook",
    "http://2130706433:{port}/hook",
    "http://0x7f.1:{port}/hook",
    "http://0x7f000001:{port}/hook",
    "http://0177.0.0.1:{port}/hook",
    "http://localhost:{port}/hook",
    "http://LOCALHOST.:{port}/hook",
    "http://[::1]:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://[::ffff:7f00:1]:{port}/hook",
    "http://0.0.0.0:{port}/hook",
    "http://[::]:{port}/hook",
    "https://127.0.0.1:{port}/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://10.0.0.5:10250/pods",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://240.0.0.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
]


def test_forbidden_webhook_targets_get_422_and_no_connection(client: httpx.Client) -> None:
    listener = SilentListener()
    try:
        for form in FORBIDDEN:
            url = form.format(port=listener.port)
            body = {"input": "Hi", "max_new_tokens": 2, "webhook": url}
            r = client.post(URL, json=body)
            assert r.status_code == 422, (url, r.text)
            assert r.json()["error"].startswith("webhook: not an allowed target"), url
        time.sleep(0.5)
        assert listener.connections == 0
    finally:
        listener.close()
