"""What a request costs, from the card's per-million-token prices."""

from __future__ import annotations

from .cards import Pricing


def estimated_cost(pricing: Pricing, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one request: prompt and completion tokens are priced separately."""
    usd = (
        prompt_tokens * pricing.input_usd_per_mtok + completion_tokens * pricing.output_usd_per_mtok
    ) / 1_000_000
    # Float noise (1.2000000000000002e-06) would leak into every response; 1e-12 USD is far
    # below the cheapest token.
    return round(usd, 12)
