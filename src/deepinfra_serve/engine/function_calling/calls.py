"""One chat request's function calling: how generation is constrained and how the answer is
read, through vLLM's parser for the card's tool format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...config.cards import ModelCard
from ..errors import APIError
from .choice import ToolChoice

# xgrammar's JSON strings admit raw control characters, which strict JSON parsers (vLLM's
# reading of forced calls, clients' json.loads) refuse. Under compact JSON they can only be
# inside strings, so escaping them keeps the meaning and makes the JSON valid.
_ESCAPES = {c: f"\\u{c:04x}" for c in range(0x20)}


def escape_controls(text: str) -> str:
    return text.translate(_ESCAPES)


class FunctionCalling:
    """A card's tool format over its engine: vLLM's parser class, looked up once at start (a
    wrong parser name stops the start rather than the first request with tools)."""

    def __init__(self, card: ModelCard, engine: Any) -> None:
        from ..vllm_seam import ParserManager
        from . import json_parser

        assert card.tool_calling is not None
        json_parser.register()
        self.model = card.name
        self.tokenizer = engine.get_tokenizer()
        self.model_config = engine.model_config
        try:
            self.parser_cls = ParserManager.get_parser(
                tool_parser_name=card.tool_calling.parser,
                enable_auto_tools=True,
                model_name=card.name,
                tokenizer=self.tokenizer,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RuntimeError(f"{card.name}: tool_calling.parser: {exc}") from exc

    @classmethod
    def of(cls, card: ModelCard, engine: Any) -> FunctionCalling | None:
        return cls(card, engine) if card.tool_calling is not None else None

    def request(
        self, tools: list[dict[str, Any]], choice: ToolChoice, parallel: bool
    ) -> ToolRequest:
        return ToolRequest(self, tools, choice, parallel)


class ToolRequest:
    """Built once per request; `parse` reads a whole answer, `reader` one streamed choice."""

    def __init__(
        self,
        functions: FunctionCalling,
        tools: list[dict[str, Any]],
        choice: ToolChoice,
        parallel: bool,
    ) -> None:
        from ..vllm_seam import ChatCompletionRequest

        self.forced = choice.forced
        # vLLM's parser classes: their hints know nothing of the tools' own types.
        self._parser_cls: Any = functions.parser_cls
        self._tokenizer = functions.tokenizer
        self._model_config = functions.model_config
        try:
            self._request = ChatCompletionRequest(
                model=functions.model,
                messages=[{"role": "user", "content": ""}],
                tools=tools,
                tool_choice=choice.for_vllm(),
                parallel_tool_calls=parallel,
            )
            # The parser sets the structured output that forces a call, and keeps the
            # special tokens its format needs in the text.
            self._request = self._parser().adjust_request(self._request)
        except ValueError as exc:  # pydantic's and vLLM's validation errors are ValueErrors
            raise APIError(422, f"tools: {exc}", param="tools") from exc
        self.structured_outputs = self._request.structured_outputs
        self.skip_special_tokens = bool(self._request.skip_special_tokens)

    def _parser(self) -> Any:
        # Parsers keep per-answer state: one per choice and per parse.
        return self._parser_cls(
            self._tokenizer, self._request.tools, model_config=self._model_config
        )

    def parse(
        self, text: str, token_ids: Any, finish_reason: str | None
    ) -> tuple[str | None, list[dict[str, Any]] | None]:
        """(content, tool calls) of a finished choice."""
        if self.forced and finish_reason == "length":
            return text, None  # a forced call cut off by max_tokens is no call
        if self.forced:
            text = escape_controls(text)
        _, content, calls = self._parser().parse(
            text, self._request, enable_auto_tools=True, model_output_token_ids=token_ids
        )
        if not calls:
            return (content if content is not None else text), None
        return content or None, [_tool_call(c.id, c.name, c.arguments) for c in calls]

    def reader(self, prompt_token_ids: list[int]) -> ChoiceReader:
        return ChoiceReader(self._parser(), self._request, prompt_token_ids, self.forced)


class ChoiceReader:
    """Turns one choice's streamed text into OpenAI delta fields (content, tool_calls)."""

    __slots__ = ("_escape", "_parser", "_prompt", "_request", "called")

    def __init__(
        self, parser: Any, request: Any, prompt_token_ids: list[int], forced: bool
    ) -> None:
        self._parser = parser
        self._request = request
        self._prompt = prompt_token_ids
        self._escape = forced
        self.called = False

    def feed(self, text: str, token_ids: Any, finished: bool) -> dict[str, Any] | None:
        if self._escape:
            text = escape_controls(text)
        msg = self._parser.parse_delta(
            text, list(token_ids), self._request, self._prompt, finished=finished
        )
        delta: dict[str, Any] = {}
        if msg is not None:
            if msg.content:
                delta["content"] = msg.content
            if msg.tool_calls:
                delta["tool_calls"] = [tc.model_dump(exclude_none=True) for tc in msg.tool_calls]
                self.called = True
        flush = getattr(self._parser.tool_parser, "flush", None) if finished else None
        if flush is not None and (rest := flush()):
            delta["content"] = delta.get("content", "") + rest
        return delta or None


# A finished choice's (content, tool calls).
Reply = tuple[str | None, list[dict[str, Any]] | None]


def replies(calls: ToolRequest | None) -> Callable[[Any], Reply]:
    """A finished choice's reply, read once per choice (its finish reason needs it too); text
    alone without tools."""
    read: dict[int, Reply] = {}

    def reply(o: Any) -> Reply:
        if o.index not in read:
            read[o.index] = (
                calls.parse(o.text, o.token_ids, o.finish_reason)
                if calls is not None
                else (o.text, None)
            )
        return read[o.index]

    return reply


def _tool_call(call_id: str | None, name: str, arguments: str) -> dict[str, Any]:
    from ..vllm_seam import make_tool_call_id

    return {
        "id": call_id or make_tool_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
