"""Handlers of the usage routes: `POST /v1/request-costs` (DeepInfra's: the cost of past
requests) and `GET /v1/me/usage` (the caller's usage by day, model and tier), both over the
usage ledger and both for the calling key's own requests only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..engine.call import Call
from ..engine.errors import APIError
from ..store import usage
from ..store.database import Store
from .schema import DailyUsageOut, RequestCostItem, RequestCostQuery, RequestCostResponse, UsageOut

MAX_DAYS = 366  # days per `GET /v1/me/usage`
DEFAULT_DAYS = 30


@dataclass(frozen=True)
class UsageServices:
    store: Store
    kept: bool  # False: the server keeps no ledger (`usage_ledger` off)

    async def aclose(self) -> None:
        return None


def _owner(call: Call[Any, Any]) -> str:
    return "" if call.tenant is None else call.tenant.owner


def _kept(services: UsageServices) -> None:
    if not services.kept:
        raise APIError(
            404, "This server keeps no usage ledger (usage_ledger is off)", code="not_found"
        )


async def request_costs(call: Call[UsageServices, RequestCostQuery]) -> RequestCostResponse:
    services = call.services
    _kept(services)
    found = await services.store.call(
        usage.costs, services.store, _owner(call), call.body.requestIds
    )
    return RequestCostResponse(
        requests=[
            # Rounded to the nearest nano-USD: the ledger keeps 1e-12 USD.
            RequestCostItem(requestId=asked, costNanoUsd=(pico + 500) // 1000)
            for asked, pico in found.items()
        ]
    )


async def my_usage(call: Call[UsageServices, None]) -> UsageOut:
    services = call.services
    _kept(services)
    today = datetime.now(UTC).date()
    last = _day(call.params, "to", today)
    first = _day(call.params, "from", last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        raise APIError(400, "from: a day on or before `to`", param="from")
    if (last - first).days >= MAX_DAYS:
        raise APIError(400, f"from: at most {MAX_DAYS} days before `to`", param="from")
    rows = await services.store.call(usage.daily, services.store, first, last, _owner(call))
    return UsageOut(
        from_=first.isoformat(),
        to=last.isoformat(),
        usage=[
            DailyUsageOut(
                day=row.day,
                model=row.served_as,
                service_tier=row.tier,
                requests=row.requests,
                prompt_tokens=row.prompt_tokens,
                cached_tokens=row.cached_tokens,
                completion_tokens=row.completion_tokens,
                estimated_cost=usd(row.cost_pico_usd),
            )
            for row in rows
        ],
        estimated_cost=usd(sum(row.cost_pico_usd for row in rows)),
    )


def usd(pico: int) -> float:
    return round(pico / 1e12, 12)


def _day(params: Any, name: str, default: date) -> date:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise APIError(400, f"{name}: a day, YYYY-MM-DD", param=name) from None
