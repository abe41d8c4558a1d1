"""What a token costs and what a request cost: the one place where cost is counted.

The card's `pricing` section is `Pricing`; the generation core counts the tokens and `Usage.of`
prices them. `Usage` is the one usage type: the OpenAI responses carry it as `usage` as it is,
the native API writes it as `inference_status`, the metrics bill it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Pricing(BaseModel):
    """USD per million tokens, billed separately for prompt and completion; prompt tokens
    read from the engine's prefix cache at their own price (absent: the input price)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    cache_read_usd_per_mtok: float | None = Field(None, ge=0)
    batch_multiplier: float = Field(
        0.8,
        gt=0,
        le=1,
        description="What a line of a batch (the Batch API) costs, as a fraction of the "
        "real-time price, cached tokens included.",
    )

    def scaled(self, multiplier: float) -> Pricing:
        """Every token price times `multiplier` (a LoRA adapter's), cache reads included."""
        # Rounded, so that float noise (0.15000000000000002) stays out of the model lists.
        return self.model_copy(
            update={
                "input_usd_per_mtok": round(self.input_usd_per_mtok * multiplier, 9),
                "output_usd_per_mtok": round(self.output_usd_per_mtok * multiplier, 9),
                "cache_read_usd_per_mtok": round(self.cache_read * multiplier, 9),
            }
        )

    @property
    def cache_read(self) -> float:
        """USD per million cached prompt tokens."""
        cached = self.cache_read_usd_per_mtok
        return self.input_usd_per_mtok if cached is None else cached


def estimated_cost(
    pricing: Pricing,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    multiplier: float = 1.0,
) -> float:
    """USD for one request: uncached prompt tokens, cached ones (part of `prompt_tokens`) and
    completion tokens, each at its price, times the service tier's multiplier."""
    usd = (
        (
            (prompt_tokens - cached_tokens) * pricing.input_usd_per_mtok
            + cached_tokens * pricing.cache_read
            + completion_tokens * pricing.output_usd_per_mtok
        )
        * multiplier
        / 1_000_000
    )
    # Float noise (1.2000000000000002e-06) would leak into every response; 1e-12 USD is far
    # below the cheapest token.
    return round(usd, 12)


@dataclass(frozen=True, slots=True)
class PromptTokensDetails:
    """OpenAI's breakdown of the prompt tokens: how many the engine read from its cache."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    cached_tokens: int


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a request used and what they cost (OpenAI's `usage`)."""

    # A plain dataclass, so that orjson writes it as it is on a stream's last chunk (fields in
    # OpenAI's order); pydantic validates it as a field of the response models, where it
    # refuses any key it does not declare.
    __pydantic_config__ = ConfigDict(extra="forbid")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    estimated_cost: Annotated[float, Field(description="USD, from the model's per-token prices.")]

    @classmethod
    def of(
        cls,
        pricing: Pricing,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        multiplier: float = 1.0,
    ) -> Usage:
        return cls(
            prompt_tokens,
            completion_tokens,
            prompt_tokens + completion_tokens,
            _details(cached_tokens),
            estimated_cost(pricing, prompt_tokens, completion_tokens, cached_tokens, multiplier),
        )

    @property
    def cached_tokens(self) -> int:
        return self.prompt_tokens_details.cached_tokens


_NONE_CACHED = PromptTokensDetails(0)


def _details(cached_tokens: int) -> PromptTokensDetails:
    return _NONE_CACHED if not cached_tokens else PromptTokensDetails(cached_tokens)


NO_USAGE = Usage(0, 0, 0, _NONE_CACHED, 0.0)
