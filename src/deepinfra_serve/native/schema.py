"""Request and response models of the native text-generation API, as DeepInfra documents them."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from ..config.cards import API_MAX_N
from ..engine.response_format import ResponseFormat, structured_outputs
from ..engine.sampling import ApiProfile, SamplingRequest, sent_null

# DeepInfra's text-generation page: max_new_tokens 512, temperature 0.7, top_p 0.9.
PROFILE = ApiProfile(
    temperature=0.7,
    top_p=0.9,
    max_tokens=512,
    prompt_field="input",
    names={"n": "num_responses", "max_tokens": "max_new_tokens"},
)


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

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
    repetition_penalty: float | None = Field(None, ge=0.01, le=5, description="Default 1.")
    stop: str | list[str] | None = Field(None, description="Up to 16 strings that end generation.")
    num_responses: int = Field(
        1, ge=1, le=API_MAX_N, description="Sequences to return; not with stream."
    )
    response_format: ResponseFormat | None = Field(
        None, description='Optional: {"type": "json_object"} for JSON output.'
    )
    presence_penalty: float = Field(0, ge=-2, le=2)
    frequency_penalty: float = Field(0, ge=-2, le=2)
    webhook: AnyHttpUrl | None = Field(
        None, description="http(s) URL to POST the result to; the call then answers at once."
    )
    stream: bool = Field(False, description="Stream tokens as server-sent events.")

    def sampling(self, seed: int) -> SamplingRequest:
        """The core's sampling input. The native API takes no seed but reports one: the
        service draws it, so that it is the seed the engine used."""
        return SamplingRequest(
            n=self.num_responses,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            max_tokens=self.max_new_tokens,
            max_tokens_open=sent_null(self, "max_new_tokens"),
            stop=self.stop,
            seed=seed,
            stream=self.stream,
            # Streamed events carry each token's logprob.
            logprobs=0 if self.stream else None,
            structured_outputs=structured_outputs(self.response_format),
        )


Status = Literal["unknown", "queued", "running", "succeeded", "failed"]


class InferenceStatus(BaseModel):
    status: Status
    runtime_ms: int = 0
    cost: float = Field(0.0, description="Estimated cost billed, USD.")
    tokens_generated: int = 0
    tokens_input: int = 0


class GeneratedText(BaseModel):
    generated_text: str


class InferenceResponse(BaseModel):
    request_id: str
    inference_status: InferenceStatus
    results: list[GeneratedText] = Field(default_factory=list)
    num_tokens: int = 0
    num_input_tokens: int = 0
    error: str | None = Field(
        None, description="Why a webhook's inference failed (webhook deliveries only)."
    )


class StreamToken(BaseModel):
    id: int
    text: str
    logprob: float
    special: bool


class StreamDetails(BaseModel):
    finish_reason: Literal["eos_token", "length", "stop_sequence"]
    generated_tokens: int
    input_tokens: int
    seed: int


class StreamEvent(BaseModel):
    """One SSE event of a streamed generation (documentation and tests)."""

    token: StreamToken
    generated_text: str | None = None
    details: StreamDetails | None = None
