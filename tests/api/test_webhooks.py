"""Webhook delivery from the real server to a real HTTP receiver on the loopback."""

from __future__ import annotations

import json
import socket
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
    """A webhook receiver on 127.0.0.2 (allowed by the session server's settings).

    Records every POST; answers 500 to the first `fail_first`, or never when `hang`."""

    def __init__(self, fail_first: int = 0, hang: bool = False, host: str = "127.0.0.2") -> None:
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

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.url = f"http://{host}:{self.port}/hook"

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
