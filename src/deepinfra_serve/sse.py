"""Server-sent event streams: what a generation handler returns to stream, and the ASGI
messages that carry one.

The frames are already SSE (`data: <json>\n\n`, built once per token by the API formatters), so
sending is one ASGI message per frame, straight from the request's own task
(`request_lifetime.serve_request`), with no response object, task group or send wrapper between.
sse-starlette was used first; measured at 128 concurrent streams on 2 cores, its per-response
task group (pings, shutdown watcher, send lock) cost time to first token against vLLM's own
server, and nothing here needs its extras: the first token is awaited before the headers go
out, so a stream is never idle before it starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.types import Message

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(frozen=True, slots=True)
class EventStream:
    """A streamed answer: its frames, each one SSE event or several of one engine step."""

    frames: AsyncIterator[bytes]


def stream_start() -> Message:
    # A fresh message each time: the middleware adds the request id to its headers.
    return {"type": "http.response.start", "status": 200, "headers": list(_HEADERS)}


def json_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> Message:
    """The start message of a JSON answer; its body goes in one message after it."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return {"type": "http.response.start", "status": status, "headers": raw}
