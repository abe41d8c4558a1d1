"""Request and response models of the native text-generation API, as DeepInfra documents them."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AnyHttpUrl, Field

from ..config.models import RequestModel, ResponseModel
from ..engine import sampling as shared
from ..engine.response_format import ResponseFormat
from ..engine.sampling import ApiProfile, SamplingRequest

# DeepInfra's text-generation page: max_new_tokens 512, temperature 0.7, top_p 0.9.
PROFILE = ApiProfile(
    temperature=0.7,
    top_p=0.9,
    max_tokens=512,
    prompt_field="input",
    names={"n": "num_responses", "max_tokens": "max_new_tokens"},
)


class InferenceRequest(RequestModel):
    profile: ClassVar[ApiProfile] = PROFILE

    input: str = Field(description="Text to generate from, already in the model's prompt format.")
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Most tokens to generate. Default 512; null means the context left.",
    )
    temperature: float | None = Field(None, ge=0, le=100, description="Default 0.7; 0 is greedy.")
    top_p: float | None = Field(None, gt=0, le=1, description="Default 0.9.")
    top_k: int | None = Field(None, ge=0, lt=100_000, description="0 means off.")
    repetition_penalty: shared.RepetitionPenalty = None
    stop: shared.Stop = None
    num_responses: shared.Sequences = Field(1, description="Sequences to return; not with stream.")
    response_format: ResponseFormat | None = Field(
        None, description='Optional: {"type": "json_object"} for JSON output.'
    )
    presence_penalty: shared.Penalty = 0
    frequency_penalty: shared.Penalty = 0
    webhook: AnyHttpUrl | None = Field(
        None, description="http(s) URL to POST the result to; the call then answers at once."
    )
    stream: bool = Field(False, description="Stream tokens as server-sent events.")

    def sampling(self, seed: int) -> SamplingRequest:
        """The core's sampling input. The native API takes no seed but reports one: the
        service draws it, so that it is the seed the engine used; streamed events carry each
        token's logprob."""
        return shared.sampling_request(
            self, PROFILE, seed=seed, logprobs=0 if self.stream else None
        )


Status = Literal["unknown", "queued", "running", "succeeded", "failed"]


class InferenceStatus(ResponseModel):
    status: Status
    runtime_ms: int = 0
    cost: float = Field(0.0, description="Estimated cost billed, USD.")
    tokens_generated: int = 0
    tokens_input: int = 0
    tokens_input_cached: int = Field(
        0, description="Of tokens_input, those read from the prefix cache (billed at its price)."
    )


class GeneratedText(ResponseModel):
    generated_text: str


class InferenceResponse(ResponseModel):
    request_id: str
    inference_status: InferenceStatus
    results: list[GeneratedText] = Field(default_factory=list)
    num_tokens: int = 0
    num_input_tokens: int = 0
    error: str | None = Field(
        None, description="Why a webhook's inference failed (webhook deliveries only)."
    )


class StreamToken(ResponseModel):
    id: int
    text: str
    logprob: float
    special: bool


class StreamDetails(ResponseModel):
    finish_reason: Literal["eos_token", "length", "stop_sequence"]
    generated_tokens: int
    input_tokens: int
    cached_input_tokens: int
    seed: int


class StreamEvent(ResponseModel):
    """One SSE event of a streamed generation."""

    token: StreamToken
    generated_text: str | None = None
    details: StreamDetails | None = None
