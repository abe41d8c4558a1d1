"""Chat completions: messages -> prompt and sampling -> generation -> OpenAI response or SSE.

Streaming follows DeepInfra rather than OpenAI where they differ: every content delta carries
`role`, and usage rides on the chunk that carries the last finish_reason (no extra
`choices: []` chunk), followed by `data: [DONE]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from ..engine.errors import invalid
from ..engine.function_calling.calls import ChoiceReader, Reply, ToolRequest, replies
from ..engine.function_calling.prompt import conversation
from ..engine.generation import Generation, Stream
from ..engine.sampling import to_sampling_params
from ..engine.served_model import ServedModel
from ..observability.record import RequestRecord
from .chunks import (
    Choice,
    UsagePolicy,
    check_stream_options,
    finish_reason,
    plain_finish,
    sse_chunks,
)
from .logprobs import chat_logprobs
from .responses import ChatChoice, ChatCompletion, ChatMessageOut
from .schema import ChatCompletionRequest
from .tools import tool_choice


def _check(req: ChatCompletionRequest) -> None:
    """What the fields ask together, beyond each one's range."""
    if req.top_logprobs is not None and not req.logprobs:
        raise invalid("top_logprobs", "needs logprobs: true")
    check_stream_options(req.stream, req.stream_options)


class ChatService:
    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.card = model.card

    async def create(
        self, req: ChatCompletionRequest, record: RequestRecord
    ) -> ChatCompletion | Stream:
        _check(req)
        choice = tool_choice(req, self.card)
        record.user = req.user
        messages = req.engine_messages()
        record.capture("messages", messages)
        tools = (
            [t.model_dump(exclude_none=True) for t in req.tools]
            if req.tools and choice.mode != "none"
            else None
        )
        messages, template_tools = conversation(
            self.card.tool_calling,
            messages,
            tools,
            choice,
            self.card.engine.tokenizer_mode == "mistral",
        )
        prompt = await self.model.prompts.chat(messages, req.chat_template_kwargs, template_tools)
        functions = self.model.functions
        calls = (
            functions.request(tools, choice, req.parallel_tool_calls)
            if tools and functions is not None
            else None
        )
        top = req.top_logprobs or 0
        extra: dict[str, Any] = {"logprobs": top if req.logprobs else None}
        if calls is not None:
            extra["skip_special_tokens"] = calls.skip_special_tokens
            if (
                calls.structured_outputs is not None
            ):  # a forced call: its schema, not response_format's
                extra["structured_outputs"] = calls.structured_outputs
        sampling = req.sampling(**extra)
        params = to_sampling_params(
            sampling,
            self.card,
            prompt_tokens=len(prompt["prompt_token_ids"]),
            profile=req.profile,
        )
        request_id = f"chatcmpl-{record.request_id}"
        if req.stream:
            delta: Callable[[Any], Choice | None]
            if calls is not None:
                delta, finish = _tool_stream(calls, prompt)
            else:
                delta, finish = (_delta if not top else partial(_delta, top=top)), plain_finish
        else:
            reply = replies(calls)
            finish = lambda o: finish_reason(o.finish_reason, bool(reply(o)[1]))  # noqa: E731
        gen = Generation(
            self.model,
            prompt,
            params,
            request_id,
            record,
            finish=finish,
            structured_param="tools" if calls is not None and calls.forced else "response_format",
        )
        await gen.start()
        if not req.stream:
            return await self._complete(request_id, gen, reply, top)
        return sse_chunks(
            gen=gen,
            model=gen.name,
            request_id=request_id,
            obj="chat.completion.chunk",
            policy=UsagePolicy.of(req.stream_options),
            delta=delta,
            finish=_finish,
        )

    async def _complete(
        self, request_id: str, gen: Generation, reply: Callable[[Any], Reply], top: int
    ) -> ChatCompletion:
        choices = []
        for o in await gen.final():
            content, tool_calls = reply(o)
            choices.append(
                ChatChoice(
                    index=o.index,
                    message=ChatMessageOut.model_validate(
                        {"content": content, "tool_calls": tool_calls}
                    ),
                    finish_reason=gen.finish_reason(o),
                    logprobs=chat_logprobs(o.token_ids, o.logprobs, top),
                )
            )
        return ChatCompletion(
            id=request_id,
            created=int(time.time()),
            model=gen.name,
            service_tier=gen.tier,
            choices=choices,
            usage=gen.usage(),
        )


# Content deltas are nearly all a chat stream sends: the text is spliced into the choice's
# JSON rather than a dict per token serialised whole, at about half the cost a frame (a test
# proves the bytes equal).
_CONTENT = (
    b'{"index":%d,"delta":{"role":"assistant","content":%b},"finish_reason":null,"logprobs":null}'
)


def _delta(o: Any, top: int = 0) -> Choice | None:
    if o.logprobs is None:
        return _CONTENT % (o.index, orjson.dumps(o.text)) if o.text else None
    return {
        "index": o.index,
        "delta": {"role": "assistant", "content": o.text},
        "finish_reason": None,
        "logprobs": chat_logprobs(o.token_ids, o.logprobs, top),
    }


def _finish(index: int, reason: str) -> dict[str, Any]:
    return {"index": index, "delta": {}, "finish_reason": reason, "logprobs": None}


def _tool_stream(
    calls: ToolRequest, prompt: dict[str, Any]
) -> tuple[Callable[[Any], dict[str, Any] | None], Callable[[Any], str]]:
    """Delta and finish-reason functions for a stream whose text goes through the tool parser,
    one reader per choice."""
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

    def finish(o: Any) -> str:
        reader = readers.get(o.index)
        return finish_reason(o.finish_reason, reader is not None and reader.called)

    return delta, finish
