"""The generation core every API shares: one engine request, from its first output to its usage
in the request record, and the loop that streams it.

An API builds the prompt and the sampling parameters, starts a `Generation` with its own finish
reasons, and answers with its formatter's output: a whole response built from `final()`, or a
`Stream` of frames. Everything else happens here, once: the first output is awaited before any
response goes out (so a request the engine refuses gets a 4xx, not a 200 that fails), tokens
are counted, each finished choice's finish reason is derived, usage and cost are worked out,
the time to the first token and (when the server logs content) the generated text go into the
request record, and the engine stream is closed (closing it early is how vLLM learns to abort
the request).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ..config.pricing import Usage
from ..observability.record import RequestRecord
from .errors import APIError, engine_dead
from .served_model import ServedModel

# The log-probability reported for a token too unlikely to show (-inf is not valid JSON).
LOGPROB_FLOOR = -9999.0

# A finished choice (a vLLM `CompletionOutput`) -> its finish reason in the API's terms.
FinishReason = Callable[[Any], str]


class Generation:
    """`finish` names a finished choice's finish reason in the API's terms (the record keeps
    the first choice's); `structured_param` is the field a grammar error is about."""

    __slots__ = (
        "_finish",
        "_first",
        "_multiplier",
        "_pricing",
        "_reasons",
        "_record",
        "_span",
        "_structured_param",
        "_texts",
        "cached_tokens",
        "completion_tokens",
        "n",
        "name",
        "outputs",
        "prompt_tokens",
        "tier",
    )

    def __init__(
        self,
        model: ServedModel,
        prompt: dict[str, Any],
        params: Any,
        request_id: str,
        record: RequestRecord,
        *,
        finish: FinishReason,
        structured_param: str = "response_format",
    ) -> None:
        self.prompt_tokens = len(prompt["prompt_token_ids"])
        if record.cache_salt is not None:  # the caller's own part of the prefix cache
            prompt = {**prompt, "cache_salt": record.cache_salt}
        self.completion_tokens = 0
        self.cached_tokens = 0  # prompt tokens the engine read from its prefix cache
        self.n: int = params.n
        served = record.serves
        self.name = served.name  # the model the answer names
        self._pricing = served.pricing
        self.tier = record.tier.service_tier  # the service tier applied, which the answer echoes
        self._multiplier = record.tier.price_multiplier
        self._record = record
        self._finish = finish
        self._reasons: dict[int, str] = {}
        self._structured_param = structured_param
        self._first: Any = None
        self._texts: list[list[str]] | None = None
        self._span: Any = None  # its span, when the request is traced
        headers = None
        trace = record.trace
        if trace is not None and trace.recording:
            self._span, headers = trace.generation(record)
        self.outputs = model.generate(
            prompt, params, request_id, record.tier.engine_priority, served.adapter, headers
        )

    async def start(self) -> None:
        """Wait for the engine's first output; the engine's refusals become API errors."""
        from vllm.exceptions import VLLMClientError

        from .vllm_seam import EngineDeadError

        try:
            try:
                self._first = await anext(self.outputs)
            except EngineDeadError as exc:
                raise engine_dead() from exc
            except (ValueError, VLLMClientError) as exc:
                param = getattr(exc, "parameter", None)
                if param is None and "grammar" in str(exc).lower():
                    # The grammar compiler refused a schema or pattern that passed our checks.
                    param = self._structured_param
                raise APIError(400, str(exc), param=param) from exc
        except BaseException:
            if self._span is not None:
                self._end_span()
            raise
        self.cached_tokens = self._first.num_cached_tokens or 0

    def usage(self) -> Usage:
        """Usage so far; final once the generation has ended."""
        return Usage.of(
            self._pricing,
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self._multiplier,
        )

    def finish_reason(self, o: Any) -> str:
        """A finished choice's finish reason, derived once by the API's `finish` (a formatter
        that reads it again gets the same answer, the record the first choice's)."""
        reason = self._reasons.get(o.index)
        if reason is None:
            reason = self._reasons[o.index] = self._finish(o)
        return reason

    async def final(self) -> list[Any]:
        """The choices of a request that does not stream (the engine sends them once), in
        order; their usage and the first one's finish reason go into the record."""
        out = self._first
        try:
            await anext(self.outputs, None)  # lets the engine's generator end by itself
        finally:
            await self.outputs.aclose()
        choices = sorted(out.outputs, key=lambda o: o.index)
        self.completion_tokens = sum(len(o.token_ids) for o in choices)
        self._record.capture("output", [o.text for o in choices])
        self._record.settle(self.usage(), self.finish_reason(choices[0]))
        if self._span is not None:
            self._end_span()
        return choices

    def begin_stream(self) -> Any:
        """The first output of a stream, its time to first token noted."""
        self._record.first_token()
        if self._record.capture_content:
            self._texts = [[] for _ in range(self.n)]
        return self._first

    def frame(self, out: Any, frame: Callable[[Any], bytes]) -> bytes:
        """One engine step of a stream: each choice's new output (a vLLM `CompletionOutput`
        delta) counted and framed by the API. Synchronous, so that `Stream.run` is one loop
        between the engine and the socket."""
        data = b""
        for o in out.outputs:
            self.completion_tokens += len(o.token_ids)
            if self._texts is not None:
                self._texts[o.index].append(o.text)
            data += frame(o)
            if o.finish_reason is not None:
                self.finish_reason(o)  # after the API has read the output
        return data

    def end_stream(self) -> None:
        """The stream ran to its end: its usage and finish reason go into the record."""
        if self._texts is not None:
            self._record.capture("output", ["".join(t) for t in self._texts])
        self._record.settle(self.usage(), self._reasons.get(0))
        if self._span is not None:
            self._end_span()

    async def close(self) -> None:
        """Close the engine's stream; closed before it ended, vLLM aborts the request."""
        await self.outputs.aclose()
        if self._span is not None:  # it ended early: cancelled, timed out, or failed
            self._end_span()

    def _end_span(self) -> None:
        self._span.end()
        self._span = None


def _nothing() -> bytes:
    return b""


@dataclass(frozen=True, slots=True)
class Stream:
    """A streamed answer: a generation and how its API frames it.

    `frame` turns one choice's output into wire bytes (b"" for none), synchronously, so that
    `run` is the only loop between the engine and the socket: a generator per layer cost a
    context switch per token each. `head` goes before the first output, `end()` after the last.
    """

    gen: Generation
    frame: Callable[[Any], bytes]
    head: bytes = b""
    end: Callable[[], bytes] = _nothing

    async def run(self, write: Callable[[bytes], Awaitable[None]]) -> bytes:
        """Write the stream's frames as the engine's outputs come; return the last ones with
        the stream's end, for the caller to send with the end of the body in one write."""
        gen, frame = self.gen, self.frame
        if self.head:
            await write(self.head)
        outputs = gen.outputs
        out = gen.begin_stream()
        last = b""
        while out is not None:
            data = gen.frame(out, frame)
            if out.finished:
                last = data
                await anext(outputs, None)  # the engine's generator ends by itself
                break
            if data:
                await write(data)
            out = await anext(outputs, None)
        gen.end_stream()
        return last + self.end()

    async def close(self) -> None:
        await self.gen.close()


@dataclass(frozen=True, slots=True)
class Raw:
    """An answer of raw bytes with its media type (a file's content), sent as its chunks
    come."""

    media_type: str
    chunks: AsyncIterable[bytes]


# What a route's handler answers: a whole JSON response, a stream of events, or raw bytes.
Answer = BaseModel | Stream | Raw
