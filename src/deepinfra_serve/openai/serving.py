"""What the chat and completions services share: priming, usage, finish reasons, SSE framing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..cards import ModelCard
from ..errors import APIError
from ..observability.context import RequestRecord
from ..pricing import estimated_cost
from .schema import StreamOptions, Usage

DONE = b"data: [DONE]\n\n"

Choice = dict[str, Any]


def finish_reason(reason: str | None, called: bool = False) -> str:
    # vLLM says "stop" for EOS, stop strings and stop tokens; "length" for max_tokens and the
    # end of the context. An answer that calls tools ends with "tool_calls".
    if reason == "length":
        return "length"
    return "tool_calls" if called else "stop"


def usage(card: ModelCard, prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        estimated_cost=estimated_cost(card.pricing, prompt_tokens, completion_tokens),
    )


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
    card: ModelCard,
    request_id: str,
    obj: str,
    first: Any,
    rest: AsyncIterator[Any],
    prompt_tokens: int,
    n: int,
    policy: UsagePolicy,
    delta: Callable[[Any], Choice | None],
    finish: Callable[[Any], Choice],
    record: RequestRecord,
    preamble: list[Choice] = (),  # type: ignore[assignment]
) -> AsyncIterator[bytes]:
    """Frame engine outputs as SSE chunks of one choice each, ending in `data: [DONE]`.

    The envelope is the same for every chunk of a response: it is serialised once and each
    choice is spliced in, so the per-token work is one small orjson call. JSON has no
    newlines, so an SSE frame is "data: " + JSON + a blank line.
    """
    head = orjson.dumps(
        {"id": request_id, "object": obj, "created": int(time.time()), "model": card.name}
    )
    prefix = b"data: " + head[:-1] + b',"choices":['
    completion_tokens = 0
    finished = 0

    def frame(choice: Choice, with_usage: bool) -> bytes:
        if not with_usage:
            return prefix + orjson.dumps(choice) + b"]}\n\n"
        u = usage(card, prompt_tokens, completion_tokens)
        return (
            prefix
            + orjson.dumps(choice)
            + b'],"usage":'
            + u.__pydantic_serializer__.to_json(u)
            + b"}\n\n"
        )

    first_reason: str | None = None
    texts: list[list[str]] | None = [[] for _ in range(n)] if record.capture_content else None
    for choice in preamble:
        yield frame(choice, policy.continuous)
    record.first_token()
    out: Any = first
    try:
        while out is not None:
            for o in out.outputs:
                completion_tokens += len(o.token_ids)
                if texts is not None:
                    texts[o.index].append(o.text)
                choice = delta(o)
                if choice is not None:
                    yield frame(choice, policy.continuous)
                if o.finish_reason is not None:
                    finished += 1
                    last = finished == n
                    closing = finish(o)
                    if o.index == 0:
                        first_reason = closing["finish_reason"]
                    yield frame(closing, policy.continuous or (policy.on_finish and last))
            out = await anext(rest, None)
    finally:
        await rest.aclose()  # after an early close, vLLM aborts the request
    u = usage(card, prompt_tokens, completion_tokens)
    record.usage(u.prompt_tokens, u.completion_tokens, u.estimated_cost, first_reason)
    if texts is not None:
        record.content = {**(record.content or {}), "output": ["".join(t) for t in texts]}
    yield DONE
