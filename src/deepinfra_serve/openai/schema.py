"""Request models of the OpenAI-compatible API, field for field as DeepInfra's (its responses:
`responses`)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from ..config.models import RequestModel
from ..config.tiers import TierName
from ..engine.request_fields import ArgumentsSchema, CacheMark
from ..engine.response_format import ResponseFormat
from ..engine.sampling import (
    ApiProfile,
    LogitBias,
    Penalty,
    RepetitionPenalty,
    SamplingRequest,
    Sequences,
    Stop,
    sampling_request,
)

# DeepInfra's documented defaults for what both the request and the card leave out; a
# max_tokens left out means the context left (up to the card's cap).
CHAT_PROFILE = ApiProfile()
COMPLETIONS_PROFILE = ApiProfile(prompt_field="prompt")


class SamplingFields(RequestModel):
    """The sampling fields, ranges and defaults of DeepInfra's OpenAI-compatible API."""

    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature; 0 is greedy. Default 1."
    )
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass. Default 1.")
    min_p: float | None = Field(
        None, ge=0, le=1, description="Minimum probability relative to the top token. Default 0."
    )
    top_k: int | None = Field(None, ge=0, lt=1000, description="Sample from the best k; 0 is off.")
    max_tokens: int | None = Field(
        None,
        ge=0,
        le=1_000_000,
        description="Most tokens to generate; null means the context left, capped at 16384.",
    )
    stop: Stop = None
    logit_bias: LogitBias = None
    n: Sequences = Field(1, description="Number of sequences to return.")
    presence_penalty: Penalty = 0
    frequency_penalty: Penalty = 0
    repetition_penalty: RepetitionPenalty = None
    seed: int | None = Field(
        None,
        ge=-(2**63),
        lt=2**64,
        description="Seed for sampling; same seed and parameters give the same text.",
    )
    response_format: ResponseFormat | None = None
    stream: bool = False
    service_tier: TierName | None = Field(
        None,
        description="default; priority: ahead of the queue and admitted while default traffic "
        "is refused, at 1.5x; flex: idle capacity, may wait up to 10 minutes, at 0.8x. The "
        "response's service_tier says which was applied (and billed): a model without the "
        "tier serves and bills the request as default.",
    )

    # The endpoint's documented defaults and field names.
    profile: ClassVar[ApiProfile] = CHAT_PROFILE

    def sampling(self, **extra: Any) -> SamplingRequest:
        """The core's sampling input; `extra` is what only one endpoint sets or overrides."""
        return sampling_request(self, self.profile, **extra)


class TextPart(BaseModel):
    """A content part; text models take text parts only (images and audio are refused)."""

    type: Literal["text"]
    text: str
    cache_control: CacheMark = None


Content = str | list[TextPart]


class _Message(RequestModel):
    name: str | None = None
    cache_control: CacheMark = None

    def text(self) -> str:
        content = getattr(self, "content", None)
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join(part.text for part in content)


class SystemMessage(_Message):
    role: Literal["system"]
    content: Content


class UserMessage(_Message):
    role: Literal["user"]
    content: Content


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="The arguments, a JSON object as text.")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(_Message):
    role: Literal["assistant"]
    content: Content | None = None
    tool_calls: list[ToolCall] | None = None


class ToolMessage(_Message):
    role: Literal["tool"]
    content: Content
    tool_call_id: str


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDefinition(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Letters, digits, _ . -")
    description: str | None = None
    parameters: ArgumentsSchema | None = Field(
        None, description="A JSON schema of type object; no parameters when left out."
    )
    strict: bool | None = Field(None, description="Accepted; forced calls always validate.")


class ToolDefinition(BaseModel):
    type: Literal["function"] = Field("function", description="Only functions are supported.")
    function: FunctionDefinition
    cache_control: CacheMark = None


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: FunctionName


class StreamOptions(BaseModel):
    include_usage: bool = Field(True, description="Send usage on the chunk that finishes.")
    continuous_usage_stats: bool = False


class ReasoningSettings(BaseModel):
    effort: Literal["low", "medium", "high"] | None = None
    enabled: bool | None = None


class ChatCompletionRequest(SamplingFields):
    model: str = Field(description="Model name, Owner/Name.")
    messages: list[Message] = Field(min_length=1)
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(
        None,
        ge=1,
        le=20,
        description="With `logprobs`: this many most likely tokens and their log-probabilities "
        "at each position.",
    )
    tools: list[ToolDefinition] | None = Field(
        None, max_length=128, description="Functions the model may call."
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="none, auto (the default with tools), required, or one function."
    )
    parallel_tool_calls: bool = Field(True, description="Allow more than one call per answer.")
    user: str | None = None
    # DeepInfra: "using these parameters on a non-reasoning model has no effect"; none of the
    # cards' models reasons, so both are accepted and change nothing.
    reasoning_effort: Literal["low", "medium", "high", "none"] | None = Field(
        None, description="Accepted; no effect on a model that does not reason."
    )
    reasoning: ReasoningSettings | None = Field(
        None, description="Accepted; no effect on a model that does not reason."
    )
    prompt_cache_key: str | None = Field(
        None,
        description="A session's cache key (e.g. userid-chatsessionid): behind a fleet's front "
        "door, requests with the same key go to the same replica, where their prefix is cached.",
    )
    chat_template_kwargs: dict[str, Any] | None = None
    max_completion_tokens: int | None = Field(
        None, ge=0, le=1_000_000, description="OpenAI's newer name for max_tokens."
    )

    @model_validator(mode="after")
    def _aliases(self) -> ChatCompletionRequest:
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self

    def engine_messages(self) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            msg: dict[str, Any] = {"role": m.role, "content": m.text()}
            if m.name:
                msg["name"] = m.name
            if isinstance(m, ToolMessage):
                msg["tool_call_id"] = m.tool_call_id
            if isinstance(m, AssistantMessage) and m.tool_calls:
                msg["tool_calls"] = [c.model_dump() for c in m.tool_calls]
            out.append(msg)
        return out


class CompletionRequest(SamplingFields):
    profile = COMPLETIONS_PROFILE

    model: str = Field(description="Model name, Owner/Name.")
    prompt: str | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] = Field(
        description="The prompt: text, or token ids."
    )
    max_tokens: int | None = Field(
        None,
        gt=0,
        le=1_000_000,
        description="Most tokens to generate; null means the context left, capped at 16384.",
    )
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(
        None,
        ge=0,
        le=20,
        description="Return the log-probabilities of this many top tokens per position.",
    )
    echo: bool | None = Field(None, description="Return the prompt before the completion.")
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, max_length=16, description="Token ids that end generation."
    )
    return_tokens_as_token_ids: bool | None = Field(
        None, description="Name tokens in logprobs as 'token_id:N'."
    )
    user: str | None = None
    prompt_cache_key: str | None = Field(
        None,
        description="A session's cache key (e.g. userid-chatsessionid): behind a fleet's front "
        "door, requests with the same key go to the same replica, where their prefix is cached.",
    )
    data: dict[str, Any] | None = None
