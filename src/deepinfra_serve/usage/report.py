"""The operator's usage report (`deepinfra-serve usage`): the store's daily rows, one per key,
day, model and tier, as CSV or JSON, ready to invoice."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from decimal import Decimal

from ..store.usage import DailyUsage

COLUMNS = (
    "day",
    "key",  # the API key's sha256 digest; empty on an open server
    "model",  # as called: a LoRA adapter's name, or the model's
    "base_model",
    "service_tier",
    "requests",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "cost_usd",  # exact: the sum of the requests' `estimated_cost`
)


def cost_usd(pico: int) -> str:
    """1e-12 USD as an exact decimal string."""
    return format(Decimal(pico).scaleb(-12), "f")


def _row(r: DailyUsage) -> dict[str, str | int]:
    return {
        "day": r.day,
        "key": r.owner,
        "model": r.served_as,
        "base_model": r.model,
        "service_tier": r.tier,
        "requests": r.requests,
        "prompt_tokens": r.prompt_tokens,
        "cached_tokens": r.cached_tokens,
        "completion_tokens": r.completion_tokens,
        "cost_usd": cost_usd(r.cost_pico_usd),
    }


def render(rows: Sequence[DailyUsage], fmt: str) -> str:
    """`rows` as `csv` (a header line, then one line each) or `json` (a list of objects)."""
    if fmt == "json":
        return json.dumps([_row(r) for r in rows], indent=2) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_row(r) for r in rows)
    return out.getvalue()
