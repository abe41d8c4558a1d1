"""Bounding a request's life: it ends when the client goes away or its time is up, and the
engine work behind it is aborted either way.

vLLM aborts a request when the task awaiting its output is cancelled or its generator is
closed; these helpers make sure that happens for non-streaming requests (Starlette does not
cancel a handler whose client disconnected) and for streams that run past their deadline or
whose engine dies mid-way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import orjson
from fastapi import Request, Response

from .errors import APIError, engine_dead, internal_error, timed_out
from .observability.context import current
from .sse import EventStream

log = logging.getLogger(__name__)

CLIENT_CLOSED = 499  # nginx's "client closed request"; nobody reads it


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def serve_request(request: Request, work: Awaitable[Any], timeout_s: float) -> Any:
    """Run a handler's work until it answers, the client disconnects, or `timeout_s` passes.

    The work runs in the request's own task; one timer and one disconnect watcher bound it and,
    for a streaming answer, its stream (`guard_stream`). Either cancels the task only while it
    waits on the work or for the next frame, so the cancellation never lands elsewhere; no task
    per request is spawned for the work, nor a task group per stream.
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    watch = _Watch(task)
    watch.timer = loop.call_at(loop.time() + timeout_s, watch.expire)
    watch.watcher = loop.create_task(_disconnected(request))
    watch.watcher.add_done_callback(watch.disconnect)
    watch.waiting = True
    try:
        result = await work
    except asyncio.CancelledError:
        watch.waiting = False
        watch.stop()
        if not watch.ended or task.uncancel() > 0:
            raise  # a cancellation from outside
        if watch.expired:
            raise timed_out(timeout_s) from None
        log.info("client disconnected; request aborted")
        return Response(status_code=CLIENT_CLOSED)
    except BaseException:
        watch.waiting = False
        watch.stop()
        raise
    watch.waiting = False
    if isinstance(result, EventStream):
        result.body_iterator = guard_stream(
            result.body_iterator, watch, timeout_s, current().endpoint.native
        )
    else:
        watch.stop()
    return result


def _error_frame(err: APIError, native: bool) -> bytes:
    frame = b"data: " + orjson.dumps(err.body(native)) + b"\n\n"
    return frame if native else frame + b"data: [DONE]\n\n"


async def guard_stream(
    frames: AsyncIterator[bytes], watch: _Watch, timeout_s: float, native: bool
) -> AsyncIterator[bytes]:
    """Pass frames through until the request's deadline or the client goes away; a timeout or
    an engine failure after the headers went out becomes an error event (the status line can
    no longer change).

    Per frame this costs two attribute writes (where a timeout context costs an object and a
    timer heap entry, and Starlette's disconnect watcher a task group per response): when the
    timer or the watcher fires while the stream waits for its next frame, it cancels that wait;
    when it fires while a frame is being sent, the stream ends before the next wait.
    """
    task = watch.task
    try:
        while not watch.ended:
            watch.waiting = True
            try:
                frame = await anext(frames)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if watch.ended and task.uncancel() == 0:
                    break  # our own timer or watcher, not a cancellation from outside
                raise
            finally:
                watch.waiting = False
            yield frame
        if watch.expired:
            yield _error_frame(timed_out(timeout_s), native)
        else:
            log.info("client disconnected; stream aborted")
    except Exception as exc:
        log.exception("stream failed")
        yield _error_frame(engine_failure(exc), native)
    finally:
        watch.stop()
        await frames.aclose()  # closes the engine's generator too: vLLM aborts the request


class _Watch:
    """A request's deadline and disconnect, as seen by the task that serves it."""

    __slots__ = ("ended", "expired", "task", "timer", "waiting", "watcher")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.waiting = False  # the task waits on the work or on the next frame
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
            if self.waiting:
                self.task.cancel()

    def stop(self) -> None:
        """The request is over: no timer, no watcher."""
        if self.timer is not None:
            self.timer.cancel()
        if self.watcher is not None:
            self.watcher.remove_done_callback(self.disconnect)
            self.watcher.cancel()


def engine_failure(exc: BaseException) -> APIError:
    from vllm.v1.engine.exceptions import EngineDeadError

    return engine_dead() if isinstance(exc, EngineDeadError) else internal_error()
