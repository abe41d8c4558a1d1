"""A request's life on the wire: its deadline and its client's disconnect.

A request ends when its answer is sent, its client goes away or its time is up; in the last two
cases the engine work behind it is aborted. vLLM aborts a request when the task awaiting its
output is cancelled or its generator is closed, so the deadline (`asyncio.timeout`) and the
disconnect watcher both cancel the request's own task, wherever it waits (on the prompt, the
engine or the socket), and the answer is written from that task: no task per request for the
work, no task group per stream, no response object or send wrapper per frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.types import Receive, Send

from ..engine.errors import (
    APIError,
    engine_dead,
    internal_error,
    store_unavailable,
    timed_out,
)
from ..engine.generation import Answer, Raw, Stream
from ..observability.record import RequestRecord
from ..store.database import StoreUnavailable
from .families import ApiFamily
from .responses import raw_start, response_start, send_json, stream_start

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's "client closed request"; nobody reads it


async def serve_request(
    receive: Receive,
    send: Send,
    work: Callable[[], Awaitable[Answer]],
    *,
    record: RequestRecord,
    timeout_s: float,
    family: ApiFamily,
    admit: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run a handler's work and send its answer: a JSON body, a stream of frames, or raw
    bytes as they come.

    `admit`, when given, is awaited first (a flex request's wait for room, under its own
    bound); the request's timeout starts once it returns, and a client that goes away while
    it waits leaves at once.

    An `APIError` before the headers is the answer; after them (a stream that times out, an
    engine that dies mid-way) it becomes the API's error event, as the status line can no
    longer change. Whatever else fails answers 500 in the API's shape, never a dropped
    connection.
    """
    task = asyncio.current_task()
    assert task is not None
    client = _Disconnect(task, receive)
    deadline = asyncio.timeout(timeout_s if admit is None else None)
    stream: Stream | None = None
    raw: Raw | None = None
    sent = False  # the headers went out
    try:
        async with deadline:
            if admit is not None:
                await admit()
                deadline.reschedule(asyncio.get_running_loop().time() + timeout_s)
            answer = await work()
            if isinstance(answer, Stream):
                stream = answer
                await send(stream_start(record))
                sent = True
                last = await stream.run(
                    lambda data: send(
                        {"type": "http.response.body", "body": data, "more_body": True}
                    )
                )
            elif isinstance(answer, Raw):
                raw = answer
                await send(raw_start(record, raw.media_type))
                sent = True
                async for chunk in raw.chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                last = b""
            deadline.reschedule(None)
        client.stop()
        if stream is not None or raw is not None:
            await send({"type": "http.response.body", "body": last, "more_body": False})
        else:
            assert not isinstance(answer, Raw | Stream)
            body = answer.model_dump_json(exclude_none=family.exclude_none).encode()
            await send_json(send, record, 200, body)
    except asyncio.CancelledError:
        client.stop()
        if not client.gone or task.uncancel() > 0:
            raise  # a cancellation from outside
        log.info("client disconnected; request aborted")
        if not sent:  # the access line and metrics read the status; the client is gone
            await send(response_start(record, CLIENT_CLOSED, []))
            await send({"type": "http.response.body", "body": b""})
    except Exception as exc:
        client.stop()
        if isinstance(exc, TimeoutError) and deadline.expired():
            err = timed_out(timeout_s)
        elif isinstance(exc, APIError):
            err = exc
            if sent:
                log.exception("stream failed")
        else:
            log.exception("request failed" if not sent else "stream failed")
            err = engine_failure(exc)
        if sent and raw is not None:  # a raw body has no error event: cut it short
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif sent:
            body = family.stream_error(err)
            await send({"type": "http.response.body", "body": body, "more_body": False})
        else:
            await send_error(send, record, err, family)
    finally:
        if stream is not None:
            await stream.close()  # before the end, vLLM aborts the request


async def send_error(send: Send, record: RequestRecord, err: APIError, family: ApiFamily) -> None:
    """An error answer in the API's shape."""
    await send_json(send, record, err.status, orjson.dumps(family.error_body(err)), err.headers)


class _Disconnect:
    """Watches for the client going away, and then cancels the task that serves it, once."""

    __slots__ = ("gone", "task", "watcher")

    def __init__(self, task: asyncio.Task[Any], receive: Receive) -> None:
        self.task = task
        self.gone = False
        self.watcher: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            _disconnected(receive)
        )
        self.watcher.add_done_callback(self._on_done)

    def _on_done(self, watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled() and not self.gone:
            self.gone = True
            self.task.cancel()

    def stop(self) -> None:
        """The answer is settled (callbacks run only while the task waits, so none can fire
        after this)."""
        if self.watcher is not None:
            self.watcher.remove_done_callback(self._on_done)
            self.watcher.cancel()
            self.watcher = None


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def engine_failure(exc: BaseException) -> APIError:
    from ..engine.vllm_seam import EngineDeadError

    if isinstance(exc, StoreUnavailable):
        return store_unavailable()
    return engine_dead() if isinstance(exc, EngineDeadError) else internal_error()
