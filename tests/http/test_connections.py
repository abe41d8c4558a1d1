"""The edge of one server against clients that hold connections open: stalled uploads hold no
generation slot and get 408 after the read timeout, half-sent headers too, the bytes of bodies
still arriving are bounded, and past the connection bound new connections get a clean 503
while the accepted ones are served. On the guarded server (limit 4; read timeout, connection
and body bounds set short in `conftest.py`), with raw sockets on the loopback."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from ..helpers import (
    CHAT,
    GUARDED_AUTH,
    GUARDED_MAX_CONNECTIONS,
    GUARDED_PENDING_BYTES,
    GUARDED_READ_TIMEOUT_S,
    HELLO,
    MODEL,
    metric_sum,
)

SHORT = {"model": MODEL, "messages": HELLO, "max_tokens": 2}


def _head(length: int, path: str = CHAT) -> bytes:
    """A chat request's headers, announcing a body of `length` bytes (its connection closed
    after the answer)."""
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
        f"authorization: {GUARDED_AUTH['Authorization']}\r\n"
        f"content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    ).encode()


@contextmanager
def _connections(url: str, n: int, first_bytes: bytes = b"") -> Iterator[list[socket.socket]]:
    """`n` connections to the server, each having sent `first_bytes` and then nothing."""
    address = urlsplit(url)
    with ExitStack() as stack:
        socks = []
        for _ in range(n):
            sock = stack.enter_context(socket.create_connection((address.hostname, address.port)))
            if first_bytes:
                sock.sendall(first_bytes)
            socks.append(sock)
        yield socks


def _answer(sock: socket.socket, within_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    sock.settimeout(within_s)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic()


def _error(answer: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers and JSON body of a whole HTTP answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, json.loads(body)


def _counter(c: httpx.Client, name: str, **labels: str) -> float:
    return metric_sum(c.get("/metrics").text, name, **labels)


def test_stalled_uploads_hold_no_slot_and_get_408_after_the_read_timeout(
    guarded: tuple[str, Path],
) -> None:
    url, _ = guarded
    stalled = 300  # far beyond the limit of 4 generation slots
    with httpx.Client(base_url=url, timeout=30, headers=GUARDED_AUTH) as c:
        late_before = _counter(c, "deepinfra_request_read_timeouts_total", stage="body")
        headers_before = _counter(c, "deepinfra_request_read_timeouts_total", stage="headers")
        # Headers, and one byte of a 100 KB body; then half a request line; then nothing.
        with (
            _connections(url, stalled, _head(100_000) + b"{") as uploads,
            _connections(url, 1, b"POST /v1/openai/chat/comp") as [half_headers],
            _connections(url, 1) as [silent],
        ):
            started = time.monotonic()
            time.sleep(0.5)  # every one of them is in
            assert c.get("/health/ready").status_code == 200
            served = c.post(CHAT, json=SHORT)
            served_after = time.monotonic() - started
            answers = [_answer(sock, GUARDED_READ_TIMEOUT_S + 30) for sock in uploads]
            half, _ = _answer(half_headers, GUARDED_READ_TIMEOUT_S + 30)
            nothing, _ = _answer(silent, GUARDED_READ_TIMEOUT_S + 30)
        late_after = _counter(c, "deepinfra_request_read_timeouts_total", stage="body")
        headers_after = _counter(c, "deepinfra_request_read_timeouts_total", stage="headers")
    print(f"a request served {served_after:.2f} s into {stalled} stalled uploads")
    assert served.status_code == 200
    assert served_after < GUARDED_READ_TIMEOUT_S  # it did not wait for them
    closed_after = [at - started for _, at in answers]
    print(f"stalled uploads closed {min(closed_after):.2f}-{max(closed_after):.2f} s in")
    assert min(closed_after) >= GUARDED_READ_TIMEOUT_S - 0.6  # none before its time
    for answer, _ in answers:
        status, headers, body = _error(answer)
        assert status == 408
        assert headers["connection"] == "close"
        assert body == {
            "error": {
                "message": f"The request did not arrive within {GUARDED_READ_TIMEOUT_S:g} s",
                "type": "invalid_request_error",
                "param": None,
                "code": "request_timeout",
            }
        }
    assert _error(half)[0] == 408  # the route is not known yet: the OpenAI shape
    assert nothing == b""  # a connection that sent nothing is just closed
    assert late_after - late_before == stalled
    assert headers_after - headers_before == 1


def test_bodies_still_arriving_are_bounded_in_bytes(guarded: tuple[str, Path]) -> None:
    url, _ = guarded
    # A chat request padded to 40 % of the bound: two fit in it, not three.
    body = json.dumps(SHORT).encode().ljust(int(GUARDED_PENDING_BYTES * 0.4))
    request = _head(len(body)) + body
    with (
        httpx.Client(base_url=url, timeout=30, headers=GUARDED_AUTH) as c,
        _connections(url, 2, request[:-1]) as held,  # all but their last byte
    ):
        time.sleep(0.5)
        with _connections(url, 1, request) as [third]:
            third.settimeout(1.5)
            with pytest.raises(TimeoutError):  # held back, unread, while the two hold the bound
                third.recv(1)
            small = c.post(CHAT, json=SHORT)  # a small body still fits beside them
            for sock in held:  # their clients give up: the third's body is read
                sock.close()
            answer, _ = _answer(third, 30)
    assert small.status_code == 200
    assert answer.startswith(b"HTTP/1.1 200 OK")


def test_past_the_connection_bound_new_connections_get_503_and_the_accepted_are_served(
    guarded: tuple[str, Path],
) -> None:
    url, _ = guarded
    extra = 40
    with httpx.Client(base_url=url, timeout=30, headers=GUARDED_AUTH) as kept:
        assert kept.post(CHAT, json=SHORT).status_code == 200  # its connection is accepted
        refused_before = _counter(kept, "deepinfra_refused_connections_total")
        with _connections(url, GUARDED_MAX_CONNECTIONS + extra) as idle:
            time.sleep(0.5)
            # The server holds its bound of connections, the kept one among them: still served.
            assert kept.post(CHAT, json=SHORT).status_code == 200
            answers = [_answer(sock, GUARDED_READ_TIMEOUT_S + 30)[0] for sock in idle]
        refused = [a for a in answers if a]
        # The bound, less the kept connection, accepted; the rest refused (a few more may be,
        # with other clients' connections still closing).
        assert extra <= len(refused) <= extra + 5
        for answer in refused:
            status, headers, body = _error(answer)
            assert status == 503
            assert headers["retry-after"] == "1"
            assert body == {
                "error": {
                    "message": "Too many open connections; retry later",
                    "type": "server_error",
                    "param": None,
                    "code": "too_many_connections",
                }
            }
        # The rest were accepted and, having sent nothing, closed at the read timeout.
        assert _counter(kept, "deepinfra_refused_connections_total") - refused_before == len(
            refused
        )
        assert kept.post(CHAT, json=SHORT).status_code == 200
    with httpx.Client(base_url=url, timeout=30, headers=GUARDED_AUTH) as fresh:
        assert fresh.post(CHAT, json=SHORT).status_code == 200  # room again
    print(f"{len(refused)} of {len(answers)} connections past the bound refused")
