"""Response models of the OpenAI-compatible API, field for field as DeepInfra's: whole answers,
streamed chunks and the model list.

They forbid keys they do not declare: the frames the formatters write as bytes for speed are
checked against them (tests), so a frame cannot drift from what is documented."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from ..config.models import ResponseModel
from ..config.pricing import Usage
from ..config.tiers import TierName
from .schema import FunctionCall, ToolCall


class FunctionCallOut(FunctionCall):
    model_config = ConfigDict(extra="forbid")


class ToolCallOut(ToolCall):
    model_config = ConfigDict(extra="forbid")

    function: FunctionCallOut


class TopLogprob(ResponseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(ResponseModel):
    token: str
    logprob: float = Field(description="At least -9999 (minus infinity is not JSON).")
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChatLogprobs(ResponseModel):
    content: list[TokenLogprob]


class CompletionLogprobs(ResponseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatMessageOut(ResponseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(ResponseModel):
    index: int
    message: ChatMessageOut
    finish_reason: FinishReason | None
    logprobs: ChatLogprobs | None = None


class ChatCompletion(ResponseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    service_tier: TierName = Field(description="The tier applied, and billed.")
    choices: list[ChatChoice]
    usage: Usage


class FunctionCallDelta(ResponseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(ResponseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class ChatDelta(ResponseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(ResponseModel):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(ResponseModel):
    """One SSE event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    service_tier: TierName = Field(description="The tier applied, and billed.")
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(ResponseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None = None


class Completion(ResponseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    service_tier: TierName = Field(description="The tier applied, and billed.")
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(ResponseModel):
    """One SSE event of a streamed text completion."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    service_tier: TierName = Field(description="The tier applied, and billed.")
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelPricing(ResponseModel):
    input_tokens: float = Field(description="USD per million prompt tokens.")
    output_tokens: float = Field(description="USD per million completion tokens.")
    cache_read_tokens: float | None = Field(
        None,
        description="USD per million prompt tokens read from the prefix cache; absent: the "
        "input price.",
        exclude_if=lambda price: price is None,
    )


class ModelMetadata(ResponseModel):
    description: str
    context_length: int
    max_tokens: int
    pricing: ModelPricing
    tags: list[str]


class ModelOut(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str
    parent: str | None = Field(None, description="A LoRA adapter's base model.")
    tags: list[str] = Field(
        description="What the model can do, as DeepInfra lists it (`tools`: function calling); "
        "clients such as llama-index read it here."
    )
    metadata: ModelMetadata


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]
