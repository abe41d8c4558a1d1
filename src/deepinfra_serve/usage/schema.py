"""The usage routes' bodies and answers: DeepInfra's `RequestCostQuery` and
`RequestCostResponse`, and the daily usage a key reads of itself."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from ..config.models import RequestModel, ResponseModel

MAX_REQUEST_IDS = 1000  # ids per `POST /v1/request-costs`


class RequestCostQuery(RequestModel):
    requestIds: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] = Field(
        max_length=MAX_REQUEST_IDS,
        description=f"Ids of the caller's requests (at most {MAX_REQUEST_IDS}): the "
        "`X-Request-ID`, the native `request_id`, or an answer's `id` (`chatcmpl-...`).",
    )


class RequestCostItem(ResponseModel):
    requestId: str
    costNanoUsd: int


class RequestCostResponse(ResponseModel):
    requests: list[RequestCostItem] = Field(
        description="One item per id the caller's requests are known by; other ids (unknown, "
        "another key's, or past the retention) are left out."
    )


class DailyUsageOut(ResponseModel):
    day: str = Field(description="YYYY-MM-DD, UTC.")
    model: str = Field(description="The model as called: a LoRA adapter's name, or the model's.")
    service_tier: str = Field(description="default, priority, flex, or batch for batch lines.")
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    estimated_cost: float = Field(description="USD.")


class UsageOut(ResponseModel):
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True, validate_by_name=True)

    from_: str = Field(alias="from", description="The first day, YYYY-MM-DD (UTC).")
    to: str = Field(description="The last day, included.")
    usage: list[DailyUsageOut] = Field(description="By day, model and tier.")
    estimated_cost: float = Field(description="USD, for the whole range.")
