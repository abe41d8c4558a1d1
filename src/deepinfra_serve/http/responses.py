"""The ASGI messages that carry a route's answer: a JSON body, or an event stream.

The frames of a stream are already SSE (`data: <json>\n\n`, built once per token by the API
formatters), so sending is one ASGI message per frame, straight from the request's own task
(`lifetime.serve_request`), with no response object, task group or send wrapper between.
sse-starlette was used first; measured at 128 concurrent streams on 2 cores, its per-response
task group (pings, shutdown watcher, send lock) cost time to first token against vLLM's own
server, and nothing here needs its extras: the first token is awaited before the headers go
out, so a stream is never idle before it starts.
"""

from __future__ import annotations

from starlette.types import Message, Send

from ..observability.record import RequestRecord

_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def response_start(
    record: RequestRecord, status: int, headers: list[tuple[bytes, bytes]]
) -> Message:
    """The start of a route's answer. It carries the request id and notes the status on the
    request's record, for the access line and metrics: the middleware that does this for
    FastAPI's routes wraps `send`, which would cost a call on every frame."""
    record.status = status
    headers.append((b"x-request-id", record.request_id.encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


def stream_start(record: RequestRecord) -> Message:
    return response_start(record, 200, list(_STREAM_HEADERS))


def raw_start(record: RequestRecord, media_type: str) -> Message:
    return response_start(record, 200, [(b"content-type", media_type.encode("latin-1"))])


async def send_json(
    send: Send,
    record: RequestRecord,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
) -> None:
    """A whole JSON answer: its start, then its body in one message."""
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send(response_start(record, status, raw))
    await send({"type": "http.response.body", "body": body})
