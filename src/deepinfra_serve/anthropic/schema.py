"""Request and response models of the Messages API, field for field as DeepInfra's
(`AnthropicMessagesIn`, `AnthropicTokenCountRequest`, `AnthropicTool`) and Anthropic's.

Content blocks the models cannot read (images, documents) and extended thinking are refused
with a 422 naming the field; `cache_control` marks are accepted (prompt prefixes are cached
whether marked or not)."""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..config.models import RequestModel, ResponseModel
from ..config.pricing import Usage
from ..engine.request_fields import ArgumentsSchema, CacheMark
from ..engine.sampling import ApiProfile, SamplingRequest, sampling_request

# Anthropic's field names for the core's; max_tokens left out or null: the context left.
MESSAGES_PROFILE = ApiProfile(names={"stop": "stop_sequences"})


class TextBlock(RequestModel):
    type: Literal["text"]
    text: str
    cache_control: CacheMark = None


class ToolUseBlock(RequestModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheMark = None


class ToolResultBlock(RequestModel):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheMark = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(b.text for b in self.content)


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]
_READ = ("text", "tool_use", "tool_result")
_UNREADABLE = ("image", "document", "search_result", "thinking", "redacted_thinking")


class Message(RequestModel):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[Block], Field(min_length=1)]

    @field_validator("content", mode="before")
    @classmethod
    def _readable(cls, content: Any) -> Any:
        """One clear refusal for a block these text models cannot read (rather than an error
        per branch of the content's union)."""
        if isinstance(content, list):
            for i, block in enumerate(content):
                kind = block.get("type") if isinstance(block, dict) else None
                if kind in _UNREADABLE:
                    raise ValueError(
                        f"block {i} is {kind}: this model reads text only ({', '.join(_READ)})"
                    )
                if kind not in _READ:
                    raise ValueError(f"block {i}: type must be one of {', '.join(_READ)}")
        return content


class Tool(RequestModel):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: ArgumentsSchema
    cache_control: CacheMark = None


class ToolChoice(RequestModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("a tool choice of type tool names the tool")
        return self


class Thinking(RequestModel):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None

    @model_validator(mode="after")
    def _refuse(self) -> Thinking:
        if self.type != "disabled":
            raise ValueError("this model does not reason; leave thinking out or disable it")
        return self


class Metadata(RequestModel):
    user_id: str | None = None


TOOL_USE_PREFIX = "toolu_"


def core_call_id(tool_use_id: str) -> str:
    """A tool_use id as the core named the call (the API shows it with Anthropic's prefix):
    some chat formats, Mistral's among them, read call ids of their own shape."""
    return tool_use_id.removeprefix(TOOL_USE_PREFIX)


class TokenCountRequest(RequestModel):
    model: str = Field(description="Model name, Owner/Name.")
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None

    def system_text(self) -> str | None:
        if self.system is None or isinstance(self.system, str):
            return self.system or None
        return "\n".join(b.text for b in self.system) or None

    def engine_messages(self) -> list[dict[str, Any]]:
        """The conversation as the chat template and the function-calling layer read it: a
        system message, user and assistant turns, an assistant's tool_use blocks as its calls
        and tool_result blocks as tool messages."""
        out: list[dict[str, Any]] = []
        system = self.system_text()
        if system:
            out.append({"role": "system", "content": system})
        for m in self.messages:
            if isinstance(m.content, str):
                out.append({"role": m.role, "content": m.content})
                continue
            texts = [b.text for b in m.content if isinstance(b, TextBlock)]
            if m.role == "assistant":
                calls = [
                    {
                        "id": core_call_id(b.id),
                        "type": "function",
                        "function": {"name": b.name, "arguments": json.dumps(b.input)},
                    }
                    for b in m.content
                    if isinstance(b, ToolUseBlock)
                ]
                msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
                if calls:
                    msg["tool_calls"] = calls
                out.append(msg)
                continue
            for b in m.content:
                if isinstance(b, ToolResultBlock):
                    out.append(
                        {
                            "role": "tool",
                            "tool_call_id": core_call_id(b.tool_use_id),
                            "content": b.text(),
                        }
                    )
            if texts:
                out.append({"role": "user", "content": "".join(texts)})
        return out

    def function_tools(self) -> list[dict[str, Any]] | None:
        """The tools as the function-calling layer reads them (OpenAI's function shape)."""
        if not self.tools:
            return None
        return [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.input_schema,
                },
            }
            for t in self.tools
        ]


class MessagesRequest(TokenCountRequest):
    max_tokens: int | None = Field(
        None, ge=1, le=1_000_000, description="Most tokens to generate; null: the context left."
    )
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1, description="Default 1.")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, lt=1000)
    metadata: Metadata | None = None

    profile: ClassVar[ApiProfile] = MESSAGES_PROFILE

    def sampling(self, **extra: Any) -> SamplingRequest:
        return sampling_request(self, self.profile, **extra)


class TextOut(ResponseModel):
    type: Literal["text"] = "text"
    text: str


class ToolUseOut(ResponseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class MessageUsage(ResponseModel):
    input_tokens: int = Field(description="Prompt tokens not read from the cache.")
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = Field(0, description="Prompt tokens read from the cache.")
    estimated_cost: float = Field(description="USD, from the model's per-token prices.")

    @classmethod
    def of(cls, usage: Usage) -> MessageUsage:
        """The core's usage in Anthropic's terms: cached prompt tokens apart from the rest."""
        return cls(
            input_tokens=usage.prompt_tokens - usage.cached_tokens,
            output_tokens=usage.completion_tokens,
            cache_read_input_tokens=usage.cached_tokens,
            estimated_cost=usage.estimated_cost,
        )


class MessageOut(ResponseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[TextOut | ToolUseOut]
    model: str
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: MessageUsage


class TokenCount(ResponseModel):
    input_tokens: int
