"""Chat completions: request -> prompt and sampling params -> engine -> OpenAI response or SSE.

Streaming follows DeepInfra rather than OpenAI where they differ: every content delta carries
`role`, and usage rides on the chunk that carries the last finish_reason (no extra
`choices: []` chunk), followed by `data: [DONE]`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sse_starlette import EventSourceResponse

from ..errors import APIError
from ..pricing import estimated_cost
from ..sampling import to_sampling_params
from ..served_model import ServedModel
from .schema import ChatChoice, ChatCompletion, ChatCompletionRequest, ChatMessageOut, Usage

_DONE = b"data: [DONE]\n\n"


def _finish_reason(reason: str | None) -> str:
    # vLLM says "stop" for EOS and stop strings, "length" for max_tokens and the context end.
    return "length" if reason == "length" else "stop"


def _logprobs(token_ids: list[int], logprobs: list[dict[int, Any]] | None) -> dict[str, Any] | None:
    if logprobs is None:
        return None
    content = []
    for token_id, entry in zip(token_ids, logprobs, strict=False):
        lp = entry[token_id]
        token = lp.decoded_token or ""
        content.append(
            {
                "token": token,
                "logprob": max(lp.logprob, -9999.0),
                "bytes": list(token.encode()),
                "top_logprobs": [],
            }
        )
    return {"content": content}


def _structured_outputs(req: ChatCompletionRequest) -> Any:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if fmt.type == "json_object":
        return StructuredOutputsParams(json_object=True)
    if fmt.type == "json_schema":
        assert fmt.json_schema is not None
        # OpenAI nests the schema: {"name": ..., "schema": {...}}; DeepInfra accepts either.
        schema = fmt.json_schema.get("schema", fmt.json_schema)
        return StructuredOutputsParams(json=schema)
    return StructuredOutputsParams(regex=fmt.regex)


class ChatService:
    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.card = model.card

    async def create(self, req: ChatCompletionRequest) -> ChatCompletion | EventSourceResponse:
        if req.tools:
            raise APIError(
                422, "tools: function calling is not supported for this model", param="tools"
            )
        if req.stream_options is not None and not req.stream:
            raise APIError(
                422, "stream_options: only allowed when stream is true", param="stream_options"
            )
        prompt = await self.model.chat_prompt(req.engine_messages())
        prompt_tokens = len(prompt["prompt_token_ids"])
        extra: dict[str, Any] = {}
        if req.logprobs:
            extra["logprobs"] = 0
        if (structured := _structured_outputs(req)) is not None:
            extra["structured_outputs"] = structured
        params = to_sampling_params(
            req,
            self.card,
            prompt_tokens=prompt_tokens,
            streaming=req.stream,
            max_tokens_null="max_tokens" in req.model_fields_set and req.max_tokens is None,
            extra=extra,
        )
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        outputs = self.model.generate(prompt, params, request_id)
        # Pull the first output before answering, so that a request the engine refuses gets a
        # proper 4xx instead of a 200 stream that fails.
        try:
            first = await anext(outputs)
        except ValueError as exc:
            raise APIError(400, str(exc)) from exc
        if req.stream:
            include_usage = req.stream_options is None or req.stream_options.include_usage
            frames = self._stream(
                request_id, first, outputs, prompt_tokens, params.n, include_usage
            )
            return EventSourceResponse(frames, sep="\n", ping=15)
        return self._complete(request_id, first, prompt_tokens)

    def _complete(self, request_id: str, out: Any, prompt_tokens: int) -> ChatCompletion:
        choices = [
            ChatChoice(
                index=o.index,
                message=ChatMessageOut(content=o.text),
                finish_reason=_finish_reason(o.finish_reason),
                logprobs=_logprobs(o.token_ids, o.logprobs),
            )
            for o in sorted(out.outputs, key=lambda o: o.index)
        ]
        completion_tokens = sum(len(o.token_ids) for o in out.outputs)
        return ChatCompletion(
            id=request_id,
            created=int(time.time()),
            model=self.card.name,
            choices=choices,
            usage=self._usage(prompt_tokens, completion_tokens),
        )

    def _usage(self, prompt_tokens: int, completion_tokens: int) -> Usage:
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            estimated_cost=estimated_cost(self.card.pricing, prompt_tokens, completion_tokens),
        )

    async def _stream(
        self,
        request_id: str,
        first: Any,
        rest: AsyncIterator[Any],
        prompt_tokens: int,
        n: int,
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        # The envelope is the same for every chunk of a response: serialise it once and splice
        # each choice in, so the per-token work is one small orjson call. JSON has no newlines,
        # so an SSE frame is "data: " + JSON + blank line.
        head = orjson.dumps(
            {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.card.name,
            }
        )
        prefix = b"data: " + head[:-1] + b',"choices":['
        completion_tokens = 0
        finished = 0
        out: Any = first
        while out is not None:
            for o in out.outputs:
                completion_tokens += len(o.token_ids)
                if o.text:
                    choice = {
                        "index": o.index,
                        "delta": {"role": "assistant", "content": o.text},
                        "finish_reason": None,
                        "logprobs": _logprobs(o.token_ids, o.logprobs),
                    }
                    yield prefix + orjson.dumps(choice) + b"]}\n\n"
                if o.finish_reason is not None:
                    finished += 1
                    choice = {
                        "index": o.index,
                        "delta": {},
                        "finish_reason": _finish_reason(o.finish_reason),
                        "logprobs": None,
                    }
                    tail = b"]}\n\n"
                    if include_usage and finished == n:
                        usage = self._usage(prompt_tokens, completion_tokens)
                        tail = (
                            b'],"usage":' + usage.__pydantic_serializer__.to_json(usage) + b"}\n\n"
                        )
                    yield prefix + orjson.dumps(choice) + tail
            out = await anext(rest, None)
        yield _DONE
