"""The vLLM tool parser of the prompt format (`deepinfra_json`).

An answer that starts with `[` or `{` is read as calls; anything else is content, streamed as
it comes. In a stream, call text is held back and each call goes out whole (name and
arguments in one delta) as soon as its object closes; held text that turns out not to be a
call is sent as content. Forced calls (required, a named function) never reach this parser:
vLLM generates them under a JSON schema and reads them itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...config.cards import JSON_TOOL_PARSER
from ..vllm_seam import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
    ToolParser,
    ToolParserManager,
    make_tool_call_id,
)
from .json_calls import CallScanner, read_call, read_calls, starts_calls, tool_names


class JsonToolParser(ToolParser):
    def __init__(self, tokenizer: Any, tools: list[Any] | None = None) -> None:
        super().__init__(tokenizer, tools)
        self._names = tool_names(self.tools)
        self._mode: str | None = None  # None: undecided; "content"; "calls"; "done"
        self._scanner = CallScanner()
        self._held = ""

    def extract_tool_calls(self, model_output: str, request: Any) -> ExtractedToolCallInformation:
        calls = read_calls(model_output, self._names, _parallel(request))
        if not calls:
            return ExtractedToolCallInformation(
                tools_called=False, tool_calls=[], content=model_output
            )
        return ExtractedToolCallInformation(
            tools_called=True,
            tool_calls=[
                ToolCall(function=FunctionCall(name=c.name, arguments=c.arguments)) for c in calls
            ],
            content=None,
        )

    def extract_tool_calls_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
        request: Any,
    ) -> DeltaMessage | None:
        if self._mode == "content":
            return DeltaMessage(content=delta_text) if delta_text else None
        if self._mode == "done":
            return None
        if self._mode is None:
            decided = starts_calls(current_text)
            if decided is None:
                return None  # leading whitespace: held until the answer shows its kind
            if not decided:
                self._mode = "content"
                return DeltaMessage(content=current_text)
            self._mode = "calls"
        self._held = current_text
        deltas: list[DeltaToolCall] = []
        for obj in self._scanner.feed(current_text):
            call = read_call(obj, self._names)
            if call is None:
                if not self.prev_tool_call_arr:  # not calls after all: say it as content
                    self._mode = "content"
                    return DeltaMessage(content=current_text)
                self._mode = "done"  # text after the calls is dropped, as when not streaming
                break
            index = len(self.prev_tool_call_arr)
            self.prev_tool_call_arr.append({"name": call.name, "arguments": call.arguments})
            self.streamed_args_for_tool.append(call.arguments)
            deltas.append(
                DeltaToolCall(
                    index=index,
                    id=make_tool_call_id(),
                    type="function",
                    function=DeltaFunctionCall(name=call.name, arguments=call.arguments),
                )
            )
            if not _parallel(request):
                self._mode = "done"
                break
        return DeltaMessage(tool_calls=deltas) if deltas else None

    def flush(self) -> str | None:
        """At the end of a stream: held text that never became a call, to send as content."""
        if self._mode == "calls" and not self.prev_tool_call_arr:
            self._mode = "content"
            return self._held
        return None


def _parallel(request: Any) -> bool:
    return getattr(request, "parallel_tool_calls", True) is not False


def register() -> None:
    ToolParserManager.register_module(JSON_TOOL_PARSER, module=JsonToolParser)
