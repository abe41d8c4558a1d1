"""OpenAI's streamed chunks and finish reasons, shared by chat and completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import APIError
from ..generation import Generation
from .schema import StreamOptions

DONE = b"data: [DONE]\n\n"

Choice = dict[str, Any]


def finish_reason(reason: str | None, called: bool = False) -> str:
    # vLLM says "stop" for EOS, stop strings and stop tokens; "length" for max_tokens and the
    # end of the context. An answer that calls tools ends with "tool_calls".
    if reason == "length":
        return "length"
    return "tool_calls" if called else "stop"


def plain_finish(o: Any) -> str:
    return finish_reason(o.finish_reason)


def check_stream_options(stream: bool, options: StreamOptions | None) -> None:
    if options is not None and not stream:
        raise APIError(
            422, "stream_options: only allowed when stream is true", param="stream_options"
        )


@dataclass(frozen=True)
class UsagePolicy:
    on_finish: bool
    continuous: bool

    @classmethod
    def of(cls, options: StreamOptions | None) -> UsagePolicy:
        # DeepInfra: include_usage defaults to true.
        options = options or StreamOptions()
        return cls(on_finish=options.include_usage, continuous=options.continuous_usage_stats)


async def sse_chunks(
    *,
    gen: Generation,
    model: str,
    request_id: str,
    obj: str,
    policy: UsagePolicy,
    delta: Callable[[Any], Choice | None],
    finish: Callable[[Any], Choice],
    preamble: list[Choice] = (),  # type: ignore[assignment]
) -> AsyncIterator[bytes]:
    """Frame a generation as SSE chunks of one choice each, ending in `data: [DONE]`.

    The envelope is the same for every chunk of a response: it is serialised once and each
    choice is spliced in, so the per-token work is one small orjson call. JSON has no
    newlines, so an SSE frame is "data: " + JSON + a blank line.
    """
    head = orjson.dumps(
        {"id": request_id, "object": obj, "created": int(time.time()), "model": model}
    )
    prefix = b"data: " + head[:-1] + b',"choices":['
    finished = 0
    n = gen.n

    def frame(choice: Choice, with_usage: bool) -> bytes:
        if not with_usage:
            return prefix + orjson.dumps(choice) + b"]}\n\n"
        return prefix + orjson.dumps(choice) + b'],"usage":' + orjson.dumps(gen.usage()) + b"}\n\n"

    for choice in preamble:
        yield frame(choice, policy.continuous)
    async for o in gen.stream():
        choice = delta(o)
        if o.finish_reason is None:
            if choice is not None:
                yield frame(choice, policy.continuous)
            continue
        # A choice's last frames, and after the last choice [DONE], go out in one write.
        finished += 1
        last = finished == n
        tail = frame(choice, policy.continuous) if choice is not None else b""
        tail += frame(finish(o), policy.continuous or (policy.on_finish and last))
        yield tail + DONE if last else tail
    if finished < n:
        yield DONE
