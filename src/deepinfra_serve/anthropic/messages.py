"""Messages: Anthropic's request -> the conversation, tools and sampling the core reads ->
one generation -> a message, or Anthropic's stream of named events.

A streamed answer is `message_start`, a `ping`, then content blocks (`content_block_start`,
`content_block_delta`s, `content_block_stop`), then `message_delta` (stop reason and usage)
and `message_stop`. Text streams as it comes. With tools, the answer is read whole before its
blocks go out, since whether the model's text is a call is known only at its end (the prompt
format's JSON calls); the events are the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Self

import orjson

from ..engine.function_calling.calls import ToolRequest, replies
from ..engine.function_calling.choice import ToolChoice as CoreChoice
from ..engine.function_calling.choice import resolve
from ..engine.function_calling.prompt import conversation
from ..engine.generation import Generation, Stream
from ..engine.sampling import to_sampling_params
from ..engine.served_model import ServedModel
from ..observability.record import RequestRecord
from .schema import (
    TOOL_USE_PREFIX,
    MessageOut,
    MessagesRequest,
    MessageUsage,
    TextOut,
    TokenCount,
    TokenCountRequest,
    ToolUseOut,
)


def _choice(req: TokenCountRequest, can_call: bool) -> CoreChoice:
    """The request's effective tool choice, after refusing what cannot be served."""
    raw = req.tool_choice
    asked = None
    if raw is not None:
        asked = (
            CoreChoice("required")
            if raw.type == "any"
            else CoreChoice("named", raw.name)
            if raw.type == "tool"
            else CoreChoice(raw.type)
        )
    return resolve(
        asked,
        [t.name for t in req.tools or ()],
        can_call=can_call,
        name_field="tools.{i}.name",
        auto_without_tools=True,
    )


@dataclass(frozen=True)
class _Prompt:
    messages: list[dict[str, Any]]  # the conversation as the request gave it
    prompt: dict[str, Any]
    calls: ToolRequest | None


def _stop_reason(o: Any, called: bool) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of a finished choice (a vLLM `CompletionOutput`)."""
    if called:
        return "tool_use", None
    if o.finish_reason == "length":
        return "max_tokens", None
    if isinstance(o.stop_reason, str):  # one of the request's stop sequences
        return "stop_sequence", o.stop_reason
    return "end_turn", None


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessagesService:
    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.card = model.card

    @classmethod
    def start(cls, model: ServedModel, lifecycle: Any, settings: Any, store: Any = None) -> Self:
        return cls(model)

    async def aclose(self) -> None:
        """Nothing outlives a request here."""

    async def _prompt(self, req: TokenCountRequest) -> _Prompt:
        functions = self.model.functions
        choice = _choice(req, functions is not None)
        tools = req.function_tools() if choice.mode != "none" else None
        given = req.engine_messages()
        messages, template_tools = conversation(
            self.card.tool_calling,
            given,
            tools,
            choice,
            self.card.engine.tokenizer_mode == "mistral",
        )
        prompt = await self.model.prompts.chat(messages, None, template_tools)
        parallel = not (req.tool_choice and req.tool_choice.disable_parallel_tool_use)
        calls = (
            functions.request(tools, choice, parallel) if tools and functions is not None else None
        )
        return _Prompt(given, prompt, calls)

    async def count_tokens(self, req: TokenCountRequest) -> TokenCount:
        """The prompt tokens the same request would send to the engine."""
        return TokenCount(input_tokens=len((await self._prompt(req)).prompt["prompt_token_ids"]))

    async def create(self, req: MessagesRequest, record: RequestRecord) -> MessageOut | Stream:
        if req.metadata is not None:
            record.user = req.metadata.user_id
        built = await self._prompt(req)
        prompt, calls = built.prompt, built.calls
        record.capture("messages", built.messages)
        extra: dict[str, Any] = {}
        if calls is not None:
            extra["skip_special_tokens"] = calls.skip_special_tokens
            if calls.structured_outputs is not None:  # a forced call: its schema
                extra["structured_outputs"] = calls.structured_outputs
        params = to_sampling_params(
            req.sampling(**extra),
            self.card,
            prompt_tokens=len(prompt["prompt_token_ids"]),
            profile=req.profile,
        )
        message_id = f"msg_{record.request_id}"
        reply = replies(calls)

        # A stream's stop reason is settled by its frames (from the whole answer) before the
        # core asks; a whole answer's from its parsed reply.
        settled: dict[int, str] = {}
        gen = Generation(
            self.model,
            prompt,
            params,
            message_id,
            record,
            finish=lambda o: settled.get(o.index) or _stop_reason(o, bool(reply(o)[1]))[0],
            structured_param="tools" if calls is not None and calls.forced else "response_format",
        )
        await gen.start()
        if req.stream:
            return self._stream(gen, message_id, calls, settled)
        [o] = await gen.final()
        content, tool_calls = reply(o)
        reason, sequence = _stop_reason(o, bool(tool_calls))
        return MessageOut(
            id=message_id,
            content=_blocks(content, tool_calls),
            model=gen.name,
            stop_reason=reason,
            stop_sequence=sequence,
            usage=MessageUsage.of(gen.usage()),
        )

    def _stream(
        self,
        gen: Generation,
        message_id: str,
        calls: ToolRequest | None,
        settled: dict[int, str],
    ) -> Stream:
        model = gen.name
        start = {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": model,
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": gen.prompt_tokens - gen.cached_tokens,
                    "output_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": gen.cached_tokens,
                },
            },
        }
        head = _event(b"message_start", start) + _event(b"ping", {"type": "ping"})
        text_open = False
        texts: list[str] = []
        token_ids: list[int] = []

        def end(o: Any, tool_calls: list[dict[str, Any]] | None) -> bytes:
            reason, sequence = _stop_reason(o, bool(tool_calls))
            settled[o.index] = reason
            usage = MessageUsage.of(gen.usage()).model_dump()
            return _event(
                b"message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": usage,
                },
            ) + _event(b"message_stop", {"type": "message_stop"})

        def frame(o: Any) -> bytes:
            nonlocal text_open
            if calls is not None:  # read whole, then sent as blocks
                texts.append(o.text)
                token_ids.extend(o.token_ids)
                if o.finish_reason is None:
                    return b""
                content, tool_calls = calls.parse("".join(texts), token_ids, o.finish_reason)
                body = b"".join(
                    _block_events(i, block) for i, block in enumerate(_blocks(content, tool_calls))
                )
                return body + end(o, tool_calls)
            out = b""
            if o.text:
                if not text_open:
                    text_open = True
                    out += _event(
                        b"content_block_start",
                        {
                            "type": "content_block_start",
                            "index": 0,
                            "content_block": {"type": "text", "text": ""},
                        },
                    )
                out += _event(
                    b"content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": o.text},
                    },
                )
            if o.finish_reason is None:
                return out
            if text_open:
                out += _event(b"content_block_stop", {"type": "content_block_stop", "index": 0})
            return out + end(o, None)

        return Stream(gen, frame, head=head)


def _blocks(
    content: str | None, tool_calls: list[dict[str, Any]] | None
) -> list[TextOut | ToolUseOut]:
    blocks: list[TextOut | ToolUseOut] = []
    if content:
        blocks.append(TextOut(text=content))
    for call in tool_calls or []:
        f = call["function"]
        try:
            arguments = json.loads(f["arguments"] or "{}")
        except ValueError:  # not a call a client could run: the model's text, as it is
            blocks.append(TextOut(text=f["arguments"]))
            continue
        if not isinstance(arguments, dict):
            arguments = {"value": arguments}
        blocks.append(ToolUseOut(id=_tool_use_id(call["id"]), name=f["name"], input=arguments))
    return blocks


def _tool_use_id(call_id: str) -> str:
    return TOOL_USE_PREFIX + call_id


def _block_events(index: int, block: TextOut | ToolUseOut) -> bytes:
    first: dict[str, Any]
    if isinstance(block, TextOut):
        first = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block.text}
    else:
        first = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block.input)}
    return (
        _event(
            b"content_block_start",
            {"type": "content_block_start", "index": index, "content_block": first},
        )
        + _event(
            b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )
        + _event(b"content_block_stop", {"type": "content_block_stop", "index": index})
    )
