"""What a request used and what it costs, from the card's per-million-token prices.

`Usage` is API-neutral: the OpenAI formatter writes it as `usage`, the native one as
`inference_status`; both get it from the generation core, which counts the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cards import Pricing


def estimated_cost(pricing: Pricing, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one request: prompt and completion tokens are priced separately."""
    usd = (
        prompt_tokens * pricing.input_usd_per_mtok + completion_tokens * pricing.output_usd_per_mtok
    ) / 1_000_000
    # Float noise (1.2000000000000002e-06) would leak into every response; 1e-12 USD is far
    # below the cheapest token.
    return round(usd, 12)


@dataclass(frozen=True, slots=True)
class Usage:
    """Field names and order are OpenAI's `usage`, so orjson writes it as it is."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated_cost: float

    @classmethod
    def of(cls, pricing: Pricing, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens,
            completion_tokens,
            prompt_tokens + completion_tokens,
            estimated_cost(pricing, prompt_tokens, completion_tokens),
        )


NO_USAGE = Usage(0, 0, 0, 0.0)
