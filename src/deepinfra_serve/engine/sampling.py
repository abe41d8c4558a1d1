"""The core's sampling input and its one mapping onto vLLM `SamplingParams`.

`SamplingRequest` is the one list of sampling fields. Each API's schema declares its fields on
the wire once (names and ranges, with the types below where both APIs agree), and
`sampling_request` reads them by name into a `SamplingRequest`; here it is validated against
the model card (a stage of its own, as in TGI's router) and then mapped. Limits and defaults
come from the card, so Mistral-Nemo's n <= 2 or pygmalion's temperature 0.7 need no code of
their own; what differs between the APIs (documented defaults, field names) is an `ApiProfile`
that each API package owns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ..config.cards import API_MAX_N, ModelCard
from .errors import APIError, invalid
from .response_format import structured_outputs

_SEED_SPACE = 2**63


@dataclass(frozen=True, slots=True)
class SamplingRequest:
    """What a request asks of the sampler, in the core's terms; None: the request is silent."""

    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_tokens: int | None = None
    # max_tokens was sent as null: as many as the context leaves, up to the card's cap.
    max_tokens_open: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    logprobs: int | None = None
    logit_bias: dict[int, float] | None = None
    stop_token_ids: list[int] | None = None
    # vLLM structured-output params: response_format's, or the forced tool call's.
    structured_outputs: Any = None
    skip_special_tokens: bool = True


# Wire fields both APIs declare alike; the others differ in range or documented default.
Sequences = Annotated[int, Field(ge=1, le=API_MAX_N)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
RepetitionPenalty = Annotated[
    float | None, Field(ge=0.01, le=5, description="Multiplicative repetition penalty. Default 1.")
]
LogitBias = Annotated[
    dict[Annotated[int, Field(ge=0)], Annotated[float, Field(ge=-100, le=100)]] | None,
    Field(
        description="Token id -> a bias from -100 to 100 added to its logit before sampling "
        "(-100 keeps it out, 100 all but forces it)."
    ),
]
Stop = Annotated[
    str | list[str] | None,
    Field(description="Up to 16 sequences that end generation; not returned."),
]


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


def sent_null(request: Any, name: str) -> bool:
    """Whether a pydantic request sent `name` as an explicit null (not left it out)."""
    return name in request.model_fields_set and getattr(request, name) is None


# Filled in from the request by `sampling_request` itself, not read by name.
_DERIVED = frozenset({"max_tokens_open", "structured_outputs"})
_READ: dict[tuple[type[BaseModel], int], tuple[tuple[str, str], ...]] = {}


def sampling_request(request: BaseModel, profile: ApiProfile, **extra: Any) -> SamplingRequest:
    """The sampling fields a request declares, read by the names its API gives them; `extra`
    is what only one endpoint sets or overrides (a forced call's grammar, the native seed)."""
    key = (type(request), id(profile))
    read = _READ.get(key)
    if read is None:
        declared = type(request).model_fields
        read = _READ[key] = tuple(
            (f.name, profile.name(f.name))
            for f in fields(SamplingRequest)
            if f.name not in _DERIVED and profile.name(f.name) in declared
        )
    values = {name: getattr(request, wire) for name, wire in read}
    values["max_tokens_open"] = sent_null(request, profile.name("max_tokens"))
    values["structured_outputs"] = structured_outputs(getattr(request, "response_format", None))
    return SamplingRequest(**(values | extra))


def _invalid(profile: ApiProfile, canonical: str, message: str) -> APIError:
    return invalid(profile.name(canonical), message)


def engine_seed(seed: int | None) -> int | None:
    """Fold DeepInfra's seed range [-2^63, 2^64) into vLLM's non-negative int64, deterministically.

    vLLM reads -1 as "no seed", so the fold keeps every result non-negative.
    """
    return None if seed is None else seed % _SEED_SPACE


@dataclass(frozen=True, slots=True)
class _Checked:
    stop: list[str]
    max_tokens: int


def validate(
    req: SamplingRequest, card: ModelCard, profile: ApiProfile, prompt_tokens: int
) -> _Checked:
    """Refuse what the card does not allow, naming the field as the API calls it."""
    limits = card.limits
    if req.n > limits.max_n:
        raise _invalid(
            profile, "n", f"this model returns at most {limits.max_n} sequences, got {req.n}"
        )
    if req.max_tokens == 0:
        raise _invalid(profile, "max_tokens", "must be at least 1 for generation")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > limits.max_stop:
        raise _invalid(
            profile, "stop", f"up to {limits.max_stop} sequences are allowed, got {len(stops)}"
        )
    if any(s == "" for s in stops):
        raise _invalid(profile, "stop", "sequences must not be empty")
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
    if req.max_tokens is not None:
        asked = req.max_tokens
    elif req.max_tokens_open or default is None:
        asked = limits.max_tokens_cap
    else:
        asked = default
    # DeepInfra: input plus generated tokens are limited by the context; the generation stops
    # there with finish_reason "length" rather than failing.
    return _Checked(stops, min(asked, room))


def _pick(value: Any, card_default: Any, api_default: Any) -> Any:
    if value is not None:
        return value
    return card_default if card_default is not None else api_default


def to_sampling_params(
    req: SamplingRequest, card: ModelCard, *, prompt_tokens: int, profile: ApiProfile
) -> Any:
    """The one mapping of a request onto vLLM, after `validate`; raises `APIError` for what
    cannot run."""
    # From the module itself: `from vllm import ...` goes through vLLM's lazy package
    # attribute, an import-machinery call on every request.
    from vllm.exceptions import VLLMClientError
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    checked = validate(req, card, profile, prompt_tokens)
    d, p = card.defaults, profile
    try:
        return SamplingParams(
            n=req.n,
            temperature=_pick(req.temperature, d.temperature, p.temperature),
            top_p=_pick(req.top_p, d.top_p, p.top_p),
            top_k=_pick(req.top_k, d.top_k, p.top_k),
            min_p=_pick(req.min_p, d.min_p, p.min_p),
            repetition_penalty=_pick(
                req.repetition_penalty, d.repetition_penalty, p.repetition_penalty
            ),
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            seed=engine_seed(req.seed),
            stop=checked.stop,
            max_tokens=checked.max_tokens,
            stop_token_ids=req.stop_token_ids,
            logprobs=req.logprobs,
            logit_bias=req.logit_bias,
            structured_outputs=req.structured_outputs,
            skip_special_tokens=req.skip_special_tokens,
            output_kind=RequestOutputKind.DELTA if req.stream else RequestOutputKind.FINAL_ONLY,
            # Made for this one request: vLLM need not deep-copy it (its own server says so).
            skip_clone=True,
        )
    except (ValueError, VLLMClientError) as exc:
        # What the API allows but this engine cannot do (the native API's temperature goes
        # to 100, vLLM's to 2) is refused by name here rather than failing later.
        name = profile.name(getattr(exc, "parameter", None) or "") or None
        raise APIError(422, str(exc), param=name, code="unsupported_value") from exc
