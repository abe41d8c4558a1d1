"""DeepInfra's sampling fields and their one mapping onto vLLM `SamplingParams`.

Every API (OpenAI chat, and later the native inference route) validates its request into
`SamplingOptions` and calls `to_sampling_params`; limits and defaults come from the model card,
so Mistral-Nemo's n <= 2 or pygmalion's temperature 0.7 need no code of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .cards import ModelCard
from .errors import APIError

_SEED_SPACE = 2**63


class ResponseFormat(BaseModel):
    """DeepInfra's response_format: text, json_object, json_schema or regex."""

    type: Literal["text", "json_object", "json_schema", "regex"] = "text"
    json_schema: dict[str, Any] | None = Field(
        None, description="The schema, or OpenAI's {name, schema} wrapper around it."
    )
    regex: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> ResponseFormat:
        # Checked here so that a broken schema or pattern is a 422 naming the field, not an
        # error from deep inside the grammar compiler.
        if self.type == "json_schema":
            if not self.json_schema:
                raise ValueError("json_schema is required when type is 'json_schema'")
            schema = self.json_schema.get("schema", self.json_schema)
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"json_schema is not a valid JSON schema: {exc.message}") from exc
        if self.type == "regex":
            if not self.regex:
                raise ValueError("regex is required when type is 'regex'")
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from exc
        return self

    def structured_outputs(self) -> Any:
        """vLLM structured-output constraints, or None for free text (JSON comes compact: the
        engine is configured so, see `engine_args`)."""
        if self.type == "text":
            return None
        from vllm.sampling_params import StructuredOutputsParams

        if self.type == "json_object":
            return StructuredOutputsParams(json_object=True)
        if self.type == "json_schema":
            assert self.json_schema is not None
            schema = self.json_schema.get("schema", self.json_schema)
            return StructuredOutputsParams(json=schema)
        return StructuredOutputsParams(regex=self.regex)


class SamplingOptions(BaseModel):
    """The sampling fields, ranges and defaults of DeepInfra's OpenAI-compatible API."""

    model_config = ConfigDict(extra="ignore")

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
    stop: str | list[str] | None = Field(
        None, description="Up to 16 sequences that end generation; not returned."
    )
    n: int = Field(1, ge=1, le=4, description="Number of sequences to return.")
    presence_penalty: float = Field(0, ge=-2, le=2)
    frequency_penalty: float = Field(0, ge=-2, le=2)
    repetition_penalty: float | None = Field(
        None, ge=0.01, le=5, description="Multiplicative repetition penalty. Default 1."
    )
    seed: int | None = Field(
        None,
        ge=-(2**63),
        lt=2**64,
        description="Seed for sampling; same seed and parameters give the same text.",
    )
    response_format: ResponseFormat | None = None


@dataclass(frozen=True)
class ApiProfile:
    """What differs between the APIs that share the adapter: documented defaults for fields
    that both the request and the card leave out, and what the API calls its fields."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    # None: the context left, up to the card's max_tokens_cap.
    max_tokens: int | None = None
    prompt_field: str = "messages"
    names: dict[str, str] = field(default_factory=dict)

    def name(self, canonical: str) -> str:
        return self.names.get(canonical, canonical)


OPENAI_CHAT = ApiProfile()
OPENAI_COMPLETIONS = ApiProfile(prompt_field="prompt")
# DeepInfra's text-generation page: max_new_tokens 512, temperature 0.7, top_p 0.9.
NATIVE = ApiProfile(
    temperature=0.7,
    top_p=0.9,
    max_tokens=512,
    prompt_field="input",
    names={"n": "num_responses", "max_tokens": "max_new_tokens"},
)


def _invalid(profile: ApiProfile, canonical: str, message: str) -> APIError:
    name = profile.name(canonical)
    return APIError(422, f"{name}: {message}", param=name, code="invalid_value")


def engine_seed(seed: int | None) -> int | None:
    """Fold DeepInfra's seed range [-2^63, 2^64) into vLLM's non-negative int64, deterministically.

    vLLM reads -1 as "no seed", so the fold keeps every result non-negative.
    """
    return None if seed is None else seed % _SEED_SPACE


def _stop_list(stop: str | list[str] | None, card: ModelCard, profile: ApiProfile) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > card.limits.max_stop:
        raise _invalid(
            profile, "stop", f"up to {card.limits.max_stop} sequences are allowed, got {len(stops)}"
        )
    if any(s == "" for s in stops):
        raise _invalid(profile, "stop", "sequences must not be empty")
    return stops


def max_new_tokens(
    options: SamplingOptions,
    card: ModelCard,
    prompt_tokens: int,
    max_tokens_null: bool,
    profile: ApiProfile = OPENAI_CHAT,
) -> int:
    """The token budget: what was asked, else the card's or the API's default, within the
    context left."""
    context = card.engine.max_model_len
    room = context - prompt_tokens
    if room < 1:
        raise APIError(
            400,
            f"Requested {prompt_tokens} prompt tokens, the model's context is {context} tokens; "
            "shorten the prompt.",
            param=profile.prompt_field,
            code="context_length_exceeded",
        )
    default = card.defaults.max_tokens or profile.max_tokens
    if options.max_tokens is not None:
        asked = options.max_tokens
    elif max_tokens_null or default is None:
        asked = card.limits.max_tokens_cap
    else:
        asked = default
    # DeepInfra: input plus generated tokens are limited by the context; the generation stops
    # there with finish_reason "length" rather than failing.
    return min(asked, room)


def to_sampling_params(
    options: SamplingOptions,
    card: ModelCard,
    *,
    prompt_tokens: int,
    streaming: bool,
    max_tokens_null: bool = False,
    logprobs: int | None = None,
    stop_token_ids: list[int] | None = None,
    profile: ApiProfile = OPENAI_CHAT,
    tool_constraint: Any = None,
    skip_special_tokens: bool = True,
) -> Any:
    """The one mapping of request fields onto vLLM; raises `APIError` for what cannot run.

    `tool_constraint` is the structured output that forces a tool call; it takes the place of
    response_format's.
    """
    from vllm import SamplingParams
    from vllm.exceptions import VLLMClientError
    from vllm.sampling_params import RequestOutputKind

    if options.n > card.limits.max_n:
        raise _invalid(
            profile,
            "n",
            f"this model returns at most {card.limits.max_n} sequences, got {options.n}",
        )
    if options.max_tokens == 0:
        raise _invalid(profile, "max_tokens", "must be at least 1 for generation")
    d = card.defaults
    p = profile

    def pick(value: Any, card_default: Any, api_default: Any) -> Any:
        if value is not None:
            return value
        return card_default if card_default is not None else api_default

    kind: Literal[RequestOutputKind.DELTA, RequestOutputKind.FINAL_ONLY] = (
        RequestOutputKind.DELTA if streaming else RequestOutputKind.FINAL_ONLY
    )
    try:
        return SamplingParams(
            n=options.n,
            temperature=pick(options.temperature, d.temperature, p.temperature),
            top_p=pick(options.top_p, d.top_p, p.top_p),
            top_k=pick(options.top_k, d.top_k, p.top_k),
            min_p=pick(options.min_p, d.min_p, p.min_p),
            repetition_penalty=pick(
                options.repetition_penalty, d.repetition_penalty, p.repetition_penalty
            ),
            presence_penalty=options.presence_penalty,
            frequency_penalty=options.frequency_penalty,
            seed=engine_seed(options.seed),
            stop=_stop_list(options.stop, card, profile),
            max_tokens=max_new_tokens(options, card, prompt_tokens, max_tokens_null, profile),
            stop_token_ids=stop_token_ids,
            logprobs=logprobs,
            structured_outputs=(
                tool_constraint
                if tool_constraint is not None
                else options.response_format.structured_outputs()
                if options.response_format
                else None
            ),
            skip_special_tokens=skip_special_tokens,
            output_kind=kind,
        )
    except (ValueError, VLLMClientError) as exc:
        # What the API allows but this engine cannot do (the native API's temperature goes
        # to 100, vLLM's to 2) is refused by name here rather than failing later.
        name = profile.name(getattr(exc, "parameter", None) or "") or None
        raise APIError(422, str(exc), param=name, code="unsupported_value") from exc
