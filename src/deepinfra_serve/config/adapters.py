"""LoRA adapters of a card's model, served under names of their own: those the card declares
(`lora.adapters`) and the engine's bounds for them (vLLM's `max_loras`, `max_lora_rank`,
`max_cpu_loras`). Adapters added at run time (`POST /lora-model`) live in the store and are
bounded by the same section."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .models import StrictModel

# The ranks vLLM 0.32 can be started with (`max_lora_rank`).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# What an adapter costs, as a multiple of its base model's price (DeepInfra: 50 % more).
DEFAULT_PRICE_MULTIPLIER = 1.5


class HubWeights(StrictModel):
    """Weights pulled from a model hub (on GPU nodes, into the model cache volume): a model's
    (by vLLM) or a LoRA adapter's (at start, with the model's)."""

    source: Literal["hub"]
    repo: str
    revision: str | None = None


class GeneratedAdapterWeights(StrictModel):
    """A random PEFT adapter made from a seed (rank `rank` on `q_proj` and `v_proj`), for the
    dev cards: deterministic, and strong enough to change what the tiny models say."""

    source: Literal["generated"]
    seed: int = 1
    rank: int = Field(8, ge=1)


AdapterWeights = Annotated[HubWeights | GeneratedAdapterWeights, Field(discriminator="source")]


class CardAdapter(StrictModel):
    name: str = Field(description="The model name clients send for it, Owner/Name.")
    description: str = ""
    version: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    weights: AdapterWeights
    price_multiplier: float = Field(DEFAULT_PRICE_MULTIPLIER, gt=0)

    @property
    def served_version(self) -> str | None:
        if self.version is not None:
            return self.version
        return self.weights.revision if isinstance(self.weights, HubWeights) else None


class LoraSpec(StrictModel):
    """The card's LoRA section: present, the engine runs with LoRA on (`enable_lora`)."""

    max_loras: int = Field(4, ge=1, description="Adapters in one engine step (GPU memory).")
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = 16
    max_cpu_loras: int | None = Field(
        None, ge=1, description="Adapters kept loaded in host memory; default max_loras."
    )
    adapters: list[CardAdapter] = Field(default_factory=list)
    # Adapters added at run time (`POST /lora-model`) for this model: in all, and per key.
    max_added: int = Field(64, ge=0)
    max_added_per_key: int = Field(8, ge=0)
    price_multiplier: float = Field(
        DEFAULT_PRICE_MULTIPLIER, gt=0, description="What adapters added at run time cost."
    )

    @model_validator(mode="after")
    def _check(self) -> LoraSpec:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError("max_cpu_loras must be at least max_loras")
        names: set[str] = set()
        for i, adapter in enumerate(self.adapters):
            if "/" not in adapter.name:
                raise ValueError(f"adapters.{i}.name must be Owner/Name")
            if adapter.name in names:
                raise ValueError(f"adapters.{i}.name: `{adapter.name}` is listed twice")
            names.add(adapter.name)
            weights = adapter.weights
            if isinstance(weights, GeneratedAdapterWeights) and weights.rank > self.max_lora_rank:
                raise ValueError(
                    f"adapters.{i}.weights.rank: {weights.rank} is over max_lora_rank "
                    f"{self.max_lora_rank}"
                )
        return self
