"""OpenAI's streamed chunks and finish reasons, shared by chat and completions."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..engine.errors import APIError
from ..engine.generation import Generation, Stream
from .schema import StreamOptions

DONE = b"data: [DONE]\n\n"

# A chunk's choice: a dict, or its JSON already written (a chat stream's content deltas).
Choice = dict[str, Any] | bytes


def finish_reason(reason: str | None, called: bool = False) -> str:
    # vLLM says "stop" for EOS, stop strings and stop tokens; "length" for max_tokens and the
    # end of the context. An answer that calls tools ends with "tool_calls".
    if reason == "length":
        return "length"
    return "tool_calls" if called else "stop"


def plain_finish(o: Any) -> str:
    """The finish reason of a choice that calls no tools."""
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


def sse_chunks(
    *,
    gen: Generation,
    model: str,
    request_id: str,
    obj: str,
    policy: UsagePolicy,
    delta: Callable[[Any], Choice | None],
    finish: Callable[[int, str], Choice],
    preamble: Sequence[Choice] = (),
) -> Stream:
    """Frame a generation as SSE chunks of one choice each, ending in `data: [DONE]`.

    `delta(output)` is a choice's new text (None: nothing to send); `finish(index, reason)` is
    its last chunk, with the finish reason the generation derived. The envelope is the same for
    every chunk of a response: it is serialised once and each choice is spliced in, so the
    per-token work is one small orjson call (or none, for a choice that comes as JSON). JSON has
    no newlines, so an SSE frame is "data: " + JSON + a blank line.
    """
    head = orjson.dumps(
        {
            "id": request_id,
            "object": obj,
            "created": int(time.time()),
            "model": model,
            "service_tier": gen.tier,
        }
    )
    prefix = b"data: " + head[:-1] + b',"choices":['
    dumps = orjson.dumps
    continuous, on_finish = policy.continuous, policy.on_finish
    n = gen.n
    finished = 0

    def chunk(choice: Choice, with_usage: bool) -> bytes:
        body = choice if choice.__class__ is bytes else dumps(choice)
        if not with_usage:
            return prefix + body + b"]}\n\n"
        return prefix + body + b'],"usage":' + dumps(gen.usage()) + b"}\n\n"

    def frame(o: Any) -> bytes:
        nonlocal finished
        choice = delta(o)
        if o.finish_reason is None:
            return b"" if choice is None else chunk(choice, continuous)
        # A choice's last frames, and after the last choice [DONE], go out in one write.
        finished += 1
        last = finished == n
        tail = chunk(choice, continuous) if choice is not None else b""
        tail += chunk(finish(o.index, gen.finish_reason(o)), continuous or (on_finish and last))
        return tail + DONE if last else tail

    def end() -> bytes:
        return DONE if finished < n else b""

    return Stream(gen, frame, head=b"".join(chunk(c, continuous) for c in preamble), end=end)
