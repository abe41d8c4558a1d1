"""The generation core both APIs share: one engine request, from its first output to its usage
in the request record.

An API builds the prompt and the sampling parameters, starts a `Generation`, and maps what it
yields to bytes. Everything else happens here, once: the first output is awaited before any
response goes out (so a request the engine refuses gets a 4xx, not a 200 that fails), tokens
are counted, usage and cost are worked out, the time to the first token and (when the server
logs content) the generated text go into the request record, and the engine stream is closed
(closing it early is how vLLM learns to abort the request).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from .errors import APIError, engine_dead
from .observability.context import RequestRecord
from .pricing import Usage
from .served_model import ServedModel

# The log-probability reported for a token too unlikely to show (-inf is not valid JSON).
LOGPROB_FLOOR = -9999.0

FinishLabel = Callable[[Any], str]


class Generation:
    """`label` names a finished choice's finish reason in the API's terms (the record keeps
    the first choice's); `structured_param` is the field a grammar error is about."""

    __slots__ = (
        "_first",
        "_label",
        "_outputs",
        "_pricing",
        "_record",
        "_structured_param",
        "completion_tokens",
        "n",
        "prompt_tokens",
    )

    def __init__(
        self,
        model: ServedModel,
        prompt: dict[str, Any],
        params: Any,
        request_id: str,
        record: RequestRecord,
        *,
        label: FinishLabel,
        structured_param: str = "response_format",
    ) -> None:
        self.prompt_tokens = len(prompt["prompt_token_ids"])
        self.completion_tokens = 0
        self.n: int = params.n
        self._pricing = model.card.pricing
        self._record = record
        self._label = label
        self._structured_param = structured_param
        self._first: Any = None
        self._outputs = model.generate(prompt, params, request_id)

    async def start(self) -> None:
        """Wait for the engine's first output; the engine's refusals become API errors."""
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            self._first = await anext(self._outputs)
        except EngineDeadError as exc:
            raise engine_dead() from exc
        except (ValueError, VLLMClientError) as exc:
            param = getattr(exc, "parameter", None)
            if param is None and "grammar" in str(exc).lower():
                # The grammar compiler refused a schema or pattern that passed our own checks.
                param = self._structured_param
            raise APIError(400, str(exc), param=param) from exc

    def usage(self) -> Usage:
        """Usage so far; final once the generation has ended."""
        return Usage.of(self._pricing, self.prompt_tokens, self.completion_tokens)

    async def final(self) -> Any:
        """The whole answer of a request that does not stream (the engine sends it once)."""
        out = self._first
        try:
            await anext(self._outputs, None)  # lets the engine's generator end by itself
        finally:
            await self._outputs.aclose()
        choices = sorted(out.outputs, key=lambda o: o.index)
        self.completion_tokens = sum(len(o.token_ids) for o in choices)
        self._record.capture("output", [o.text for o in choices])
        self._record.settle(self.usage(), self._label(choices[0]))
        return out

    async def stream(self) -> AsyncIterator[Any]:
        """Each choice's new output (a vLLM `CompletionOutput` delta), counted as it comes."""
        record = self._record
        texts: list[list[str]] | None = (
            [[] for _ in range(self.n)] if record.capture_content else None
        )
        reason: str | None = None
        record.first_token()
        out = self._first
        try:
            while out is not None:
                for o in out.outputs:
                    self.completion_tokens += len(o.token_ids)
                    if texts is not None:
                        texts[o.index].append(o.text)
                    yield o
                    if o.index == 0 and o.finish_reason is not None:
                        reason = self._label(o)  # after the API has read the output
                out = await anext(self._outputs, None)
        finally:
            await self._outputs.aclose()  # after an early close, vLLM aborts the request
        if texts is not None:
            record.capture("output", ["".join(t) for t in texts])
        record.settle(self.usage(), reason)
