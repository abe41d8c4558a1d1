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

    A streaming answer gets the rest of the time budget as the deadline of its stream.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {task, watcher}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        watcher.cancel()
    if task not in done:
        task.cancel()
        if watcher in done:
            log.info("client disconnected; request aborted")
            return Response(status_code=CLIENT_CLOSED)
        raise timed_out(timeout_s)
    result = task.result()
    if isinstance(result, EventStream):
        result.body_iterator = guard_stream(
            result.body_iterator, deadline, timeout_s, current().endpoint.native
        )
    return result


def _error_frame(err: APIError, native: bool) -> bytes:
    frame = b"data: " + orjson.dumps(err.body(native)) + b"\n\n"
    return frame if native else frame + b"data: [DONE]\n\n"


async def guard_stream(
    frames: AsyncIterator[bytes], deadline: float, timeout_s: float, native: bool
) -> AsyncIterator[bytes]:
    """Pass frames through until `deadline`; a timeout or an engine failure after the headers
    went out becomes an error event (the status line can no longer change).

    One timer per stream, not one per frame: when it fires while the stream waits for its
    next frame, it cancels that wait; when it fires while the frame is being sent, the stream
    ends before the next wait. Per frame that costs two attribute writes, where a timeout
    context costs an object and a timer heap entry.
    """
    task = asyncio.current_task()
    assert task is not None
    watch = _Deadline(task)
    handle = asyncio.get_running_loop().call_at(deadline, watch.expire)
    try:
        while not watch.expired:
            watch.waiting = True
            try:
                frame = await anext(frames)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if watch.expired and task.uncancel() == 0:
                    break  # our own timer: the deadline, not a cancellation from outside
                raise
            finally:
                watch.waiting = False
            yield frame
        yield _error_frame(timed_out(timeout_s), native)
    except Exception as exc:
        log.exception("stream failed")
        yield _error_frame(engine_failure(exc), native)
    finally:
        handle.cancel()
        await frames.aclose()  # closes the engine's generator too: vLLM aborts the request


class _Deadline:
    __slots__ = ("expired", "task", "waiting")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.waiting = False
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        if self.waiting:
            self.task.cancel()


def engine_failure(exc: BaseException) -> APIError:
    from vllm.v1.engine.exceptions import EngineDeadError

    return engine_dead() if isinstance(exc, EngineDeadError) else internal_error()
