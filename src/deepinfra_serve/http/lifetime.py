"""A generation request's life, from its handler's work to the last byte: it ends when the
answer is sent, the client goes away or its time is up, and the engine work behind it is
aborted in the last two cases.

vLLM aborts a request when the task awaiting its output is cancelled or its generator is
closed. Here one timer and one disconnect watcher cancel the request's own task, wherever it
waits (on the prompt, the engine or the socket), and the answer is written from that task: no
task per request for the work, no task group per stream, no response object or send wrapper
per frame.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.types import Receive, Send

from ..engine.errors import APIError, engine_dead, internal_error, timed_out
from .responses import EventStream, response_start, send_json, stream_start

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's "client closed request"; nobody reads it

Answer = BaseModel | EventStream


async def serve_request(
    receive: Receive,
    send: Send,
    work: Awaitable[Answer],
    *,
    timeout_s: float,
    native: bool,
    exclude_none: bool = False,
) -> None:
    """Run a handler's work and send its answer: a JSON body, or a stream of SSE frames.

    An `APIError` before the headers is the answer; after them (a stream that times out, an
    engine that dies mid-way) it becomes an error event, as the status line can no longer
    change. Whatever else fails answers 500 in the API's shape, never a dropped connection.
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    watch = _Watch(task)
    watch.timer = loop.call_at(loop.time() + timeout_s, watch.expire)
    watch.watcher = loop.create_task(_disconnected(receive))
    watch.watcher.add_done_callback(watch.disconnect)
    stream: EventStream | None = None
    sent = False  # the headers went out
    try:
        answer = await work
        if isinstance(answer, EventStream):
            stream = answer
            await send(stream_start())
            sent = True
            if stream.head:
                await send({"type": "http.response.body", "body": stream.head, "more_body": True})
            gen, frame = stream.gen, stream.frame
            outputs = gen.outputs
            out = gen.begin_stream()
            last = b""  # the last frames go out with the end of the body, in one write
            while out is not None:
                data = gen.frame(out, frame)
                if out.finished:
                    last = data
                    await anext(outputs, None)  # the engine's generator ends by itself
                    break
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                out = await anext(outputs, None)
            gen.end_stream()
            watch.stop()
            await send(
                {"type": "http.response.body", "body": last + stream.end(), "more_body": False}
            )
        else:
            watch.stop()
            await send_json(send, 200, answer.model_dump_json(exclude_none=exclude_none).encode())
    except asyncio.CancelledError:
        watch.stop()
        if not watch.ended or task.uncancel() > 0:
            raise  # a cancellation from outside
        if not watch.expired:
            log.info("client disconnected; request aborted")
            if not sent:  # the access line and metrics read the status; the client is gone
                await send(response_start(CLIENT_CLOSED, []))
                await send({"type": "http.response.body", "body": b""})
        elif sent:
            await _end_stream(send, timed_out(timeout_s), native)
        else:
            await send_error(send, timed_out(timeout_s), native)
    except Exception as exc:
        watch.stop()
        err = exc if isinstance(exc, APIError) else engine_failure(exc)
        if not isinstance(exc, APIError) or sent:
            log.exception("request failed" if not sent else "stream failed")
        if sent:
            await _end_stream(send, err, native)
        else:
            await send_error(send, err, native)
    finally:
        if stream is not None:
            await stream.gen.close()  # before the end, vLLM aborts the request


async def send_error(send: Send, err: APIError, native: bool) -> None:
    """An error answer in the API's shape: OpenAI's error object, or DeepInfra's native one."""
    await send_json(send, err.status, orjson.dumps(err.body(native)), err.headers)


async def _end_stream(send: Send, err: APIError, native: bool) -> None:
    frame = b"data: " + orjson.dumps(err.body(native)) + b"\n\n"
    if not native:
        frame += b"data: [DONE]\n\n"
    await send({"type": "http.response.body", "body": frame, "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Watch:
    """A request's deadline and disconnect, as seen by the task that serves it: either cancels
    that task once, at whatever it awaits then."""

    __slots__ = ("ended", "expired", "task", "timer", "watcher")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.ended = False  # the deadline passed or the client went away
        self.expired = False
        self.timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Task[None] | None = None

    def expire(self) -> None:
        self.expired = True
        self._end()

    def disconnect(self, watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled():
            self._end()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.task.cancel()

    def stop(self) -> None:
        """The answer is settled: no timer, no watcher (callbacks run only while the task
        waits, so none can fire after this)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.watcher is not None:
            self.watcher.remove_done_callback(self.disconnect)
            self.watcher.cancel()
            self.watcher = None


def engine_failure(exc: BaseException) -> APIError:
    from vllm.v1.engine.exceptions import EngineDeadError

    return engine_dead() if isinstance(exc, EngineDeadError) else internal_error()
