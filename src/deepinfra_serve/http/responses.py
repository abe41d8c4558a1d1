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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import Message, Send

from ..observability.record import current

if TYPE_CHECKING:
    from ..engine.generation import Generation

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _nothing() -> bytes:
    return b""


@dataclass(frozen=True, slots=True)
class EventStream:
    """A streamed answer: the generation and how to frame its outputs.

    `frame` turns one choice's output into SSE bytes (b"" for none), synchronously: the
    request's task iterates the engine's outputs itself, one loop between the engine and the
    socket, where a generator per layer cost a context switch per token each. `head` goes
    before the first output, `end()` after the last.
    """

    gen: Generation
    frame: Callable[[Any], bytes]
    head: bytes = b""
    end: Callable[[], bytes] = _nothing


def response_start(status: int, headers: list[tuple[bytes, bytes]]) -> Message:
    """The start of a generation route's answer. It carries the request id and notes the
    status on the request's record, for the access line and metrics: the middleware that does
    this for other routes wraps `send`, which would cost a call on every frame."""
    record = current()
    record.status = status
    headers.append((b"x-request-id", record.request_id.encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


def stream_start() -> Message:
    return response_start(200, list(_HEADERS))


async def send_json(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    """A whole JSON answer: its start, then its body in one message."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send(response_start(status, raw))
    await send({"type": "http.response.body", "body": body})
