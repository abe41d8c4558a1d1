"""Chat completions: messages -> prompt and sampling params -> engine -> OpenAI response or SSE.

Streaming follows DeepInfra rather than OpenAI where they differ: every content delta carries
`role`, and usage rides on the chunk that carries the last finish_reason (no extra
`choices: []` chunk), followed by `data: [DONE]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import APIError
from ..function_calling.calls import ChoiceReader, ToolRequest
from ..function_calling.checks import check_tools
from ..function_calling.prompt import conversation
from ..observability.context import RequestRecord, current
from ..sampling import to_sampling_params
from ..served_model import ServedModel, first_output
from ..streaming import EventStream
from .logprobs import chat_logprobs
from .schema import ChatChoice, ChatCompletion, ChatCompletionRequest, ChatMessageOut
from .serving import UsagePolicy, check_stream_options, finish_reason, sse_chunks, usage


def _refuse_unsupported(req: ChatCompletionRequest) -> None:
    if req.reasoning_effort not in (None, "none"):
        raise APIError(
            422,
            "reasoning_effort: this model does not reason; use 'none' or leave it out",
            param="reasoning_effort",
        )
    if req.reasoning is not None and (req.reasoning.enabled or req.reasoning.effort):
        raise APIError(422, "reasoning: this model does not reason", param="reasoning")
    check_stream_options(req.stream, req.stream_options)


class ChatService:
    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.card = model.card

    async def create(self, req: ChatCompletionRequest) -> ChatCompletion | EventStream:
        _refuse_unsupported(req)
        choice = check_tools(req, self.card)
        record = current()
        record.user = req.user
        messages = req.engine_messages()
        if record.capture_content:
            record.content = {"messages": messages}
        tools = (
            [t.model_dump(exclude_none=True) for t in req.tools]
            if req.tools and choice.mode != "none"
            else None
        )
        messages, template_tools = conversation(
            self.card.tool_calling,
            messages,
            tools,
            choice.name or choice.mode,
            self.card.engine.tokenizer_mode == "mistral",
        )
        prompt = await self.model.chat_prompt(messages, req.chat_template_kwargs, template_tools)
        prompt_tokens = len(prompt["prompt_token_ids"])
        calls = (
            self.model.tool_request(tools, choice.for_vllm(), req.parallel_tool_calls)
            if tools
            else None
        )
        params = to_sampling_params(
            req,
            self.card,
            prompt_tokens=prompt_tokens,
            streaming=req.stream,
            max_tokens_null="max_tokens" in req.model_fields_set and req.max_tokens is None,
            logprobs=0 if req.logprobs else None,
            tool_constraint=calls.structured_outputs if calls else None,
            skip_special_tokens=calls.skip_special_tokens if calls else True,
        )
        request_id = f"chatcmpl-{record.request_id}"
        outputs = self.model.generate(prompt, params, request_id)
        first = await first_output(
            outputs, "tools" if calls is not None and calls.forced else "response_format"
        )
        if not req.stream:
            return self._complete(request_id, first, prompt_tokens, record, calls)
        delta, finish = (_delta, _finish) if calls is None else _tool_stream(calls, prompt)
        frames = sse_chunks(
            card=self.card,
            request_id=request_id,
            obj="chat.completion.chunk",
            first=first,
            rest=outputs,
            prompt_tokens=prompt_tokens,
            n=params.n,
            policy=UsagePolicy.of(req.stream_options),
            delta=delta,
            finish=finish,
            record=record,
        )
        return EventStream(frames)

    def _complete(
        self,
        request_id: str,
        out: Any,
        prompt_tokens: int,
        record: RequestRecord,
        calls: ToolRequest | None,
    ) -> ChatCompletion:
        choices = []
        for o in sorted(out.outputs, key=lambda o: o.index):
            content, tool_calls = o.text, None
            if calls is not None:
                content, tool_calls = calls.parse(o.text, o.token_ids, o.finish_reason)
            choices.append(
                ChatChoice(
                    index=o.index,
                    message=ChatMessageOut.model_validate(
                        {"content": content, "tool_calls": tool_calls}
                    ),
                    finish_reason=finish_reason(o.finish_reason, bool(tool_calls)),
                    logprobs=chat_logprobs(o.token_ids, o.logprobs),
                )
            )
        completion_tokens = sum(len(o.token_ids) for o in out.outputs)
        u = usage(self.card, prompt_tokens, completion_tokens)
        record.usage(prompt_tokens, completion_tokens, u.estimated_cost, choices[0].finish_reason)
        if record.capture_content:
            record.content = {
                **(record.content or {}),
                "output": [c.message.content for c in choices],
            }
        return ChatCompletion(
            id=request_id, created=int(time.time()), model=self.card.name, choices=choices, usage=u
        )


def _delta(o: Any) -> dict[str, Any] | None:
    if not o.text and o.logprobs is None:
        return None
    return {
        "index": o.index,
        "delta": {"role": "assistant", "content": o.text},
        "finish_reason": None,
        "logprobs": chat_logprobs(o.token_ids, o.logprobs),
    }


def _tool_stream(
    calls: ToolRequest, prompt: dict[str, Any]
) -> tuple[Callable[[Any], dict[str, Any] | None], Callable[[Any], dict[str, Any]]]:
    """Delta and finish functions for a stream whose text goes through the tool parser, one
    reader per choice."""
    readers: dict[int, ChoiceReader] = {}

    def delta(o: Any) -> dict[str, Any] | None:
        reader = readers.get(o.index)
        if reader is None:
            reader = readers[o.index] = calls.reader(prompt["prompt_token_ids"])
        fields = reader.feed(o.text, o.token_ids, o.finish_reason is not None)
        if fields is None:
            return None
        return {
            "index": o.index,
            "delta": {"role": "assistant", **fields},
            "finish_reason": None,
            "logprobs": None,
        }

    def finish(o: Any) -> dict[str, Any]:
        reader = readers.get(o.index)
        return {
            "index": o.index,
            "delta": {},
            "finish_reason": finish_reason(o.finish_reason, reader is not None and reader.called),
            "logprobs": None,
        }

    return delta, finish


def _finish(o: Any) -> dict[str, Any]:
    return {
        "index": o.index,
        "delta": {},
        "finish_reason": finish_reason(o.finish_reason),
        "logprobs": None,
    }
