"""DeepInfra's account route the server can answer: `GET /v1/me/rate_limit`, the caller's
limits on this model, from the keys configuration (`auth`)."""

from __future__ import annotations

from pydantic import Field

from ..config.catalog import Catalog
from ..config.models import ResponseModel
from ..engine.call import Call


class RateLimitOut(ResponseModel):
    """DeepInfra's RateLimitOut."""

    rate_limit: int = Field(description="Per model outstanding request rate limit")
    tpm_rate_limit: int = Field(
        description="Per model token per minute rate limit; 0: tokens per minute are not "
        "limited (this server limits concurrent requests only)."
    )


async def rate_limit(call: Call[Catalog, None]) -> RateLimitOut:
    # An open server (no keys) has no per-key limit: the model's own bound is what a caller
    # meets.
    tenant = call.tenant
    limit = tenant.rate_limit if tenant is not None else call.services.rate_limit
    return RateLimitOut(rate_limit=limit, tpm_rate_limit=0)
