"""Service tiers (DeepInfra's `service_tier`): what a card sells beside the default tier, and
the tier a request is served and billed at.

- priority: ahead of default in the engine's queue, admitted on a reserve above the default
  limit while default traffic gets "Model busy", at a higher price (DeepInfra: 1.5x);
- flex: behind default in the engine's queue, admitted only into capacity default traffic is
  not using (within its own share), waiting for it up to a bound, at a lower price (0.8x).

A card without a tier serves a request for it as default, bills it as default and says so:
what is echoed in `service_tier` is always what is billed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from .models import StrictModel

TierName = Literal["default", "priority", "flex"]


class PriorityTier(StrictModel):
    price_multiplier: float = Field(1.5, gt=0)
    reserve: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Capacity held for priority above the default limit, as a fraction of "
        "limits.max_concurrent_requests (at least one request).",
    )


class FlexTier(StrictModel):
    price_multiplier: float = Field(0.8, gt=0)
    share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="The most flex requests in flight at once, as a fraction of "
        "limits.max_concurrent_requests (at least one request).",
    )


class ServiceTiers(StrictModel):
    """Absent: the card serves only the default tier."""

    priority: PriorityTier | None = None
    flex: FlexTier | None = None


@dataclass(frozen=True, slots=True)
class Tier:
    """The tier a request is served and billed at."""

    name: TierName | Literal["batch"]  # metered and logged as
    engine_priority: int  # vLLM's `priority`: lower is scheduled first
    price_multiplier: float
    service_tier: TierName  # what its answers echo

    @classmethod
    def offered(cls, name: TierName, engine_priority: int, price_multiplier: float) -> Tier:
        return cls(name, engine_priority, price_multiplier, name)

    @classmethod
    def batch(cls, price_multiplier: float) -> Tier:
        """A line of a batch: behind every online tier in the engine's queue, at the card's
        batch price; its answer is the default tier's, as OpenAI's batch answers are."""
        return cls("batch", 2, price_multiplier, "default")


DEFAULT = Tier.offered("default", 0, 1.0)


@dataclass(frozen=True)
class TierPolicy:
    """A card's tiers, resolved against its concurrency limit."""

    limit: int  # default traffic in flight before "Model busy"
    reserve: int  # priority's room above it (0: no priority tier)
    flex_slots: int  # flex requests in flight at most (0: no flex tier)
    tiers: dict[str, Tier]

    @classmethod
    def of(cls, tiers: ServiceTiers | None, limit: int) -> TierPolicy:
        tiers = tiers or ServiceTiers()
        offered = {"default": DEFAULT}
        reserve = flex_slots = 0
        if tiers.priority is not None:
            reserve = max(1, math.ceil(limit * tiers.priority.reserve))
            offered["priority"] = Tier.offered("priority", -1, tiers.priority.price_multiplier)
        if tiers.flex is not None:
            flex_slots = max(1, math.ceil(limit * tiers.flex.share))
            offered["flex"] = Tier.offered("flex", 1, tiers.flex.price_multiplier)
        return cls(limit, reserve, flex_slots, offered)

    def applied(self, requested: str | None) -> Tier:
        """The tier a request for `requested` gets: that one if the card offers it, else
        default."""
        return DEFAULT if requested is None else self.tiers.get(requested, DEFAULT)
