"""The usage ledger in the store: one row per billed request, kept for the operator's
retention, and one row per key, day, model, adapter and tier, kept for good.

Both are written in one transaction per group of entries (`write`): a request row is inserted
once by its (origin, seq), and only the rows inserted add to the daily rows, so that a group
written again (its first answer lost) adds nothing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Insert, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from ..observability.ledger import LedgerEntry
from .database import Store
from .tables import usage_daily, usage_requests

# Known prefixes of the ids a client sees for a request: the OpenAI answers' `id`, the
# Messages API's, a batch line's. Each names the request id that follows it.
ID_PREFIXES = ("chatcmpl-", "cmpl-", "msg_", "batch_req_")
_DAILY_KEY = ("day", "owner", "model", "adapter", "tier")
_SUMS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_pico_usd")


def day_of(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).date().isoformat()


def write(store: Store, entries: Sequence[LedgerEntry]) -> int:
    """Record `entries`; how many were new."""
    add_requests, add_to_days = _statements(store.sqlite)
    with store.engine.begin() as conn:
        inserted = conn.execute(add_requests, [_request_row(e) for e in entries]).all()
        new = {(origin, seq) for origin, seq in inserted}
        days = _days(e for e in entries if (e.origin, e.seq) in new)
        if days:
            conn.execute(add_to_days, days)
    return len(new)


@functools.cache
def _statements(sqlite_: bool) -> tuple[Insert, Insert]:
    """The two statements a write runs, in the dialect's words (both say ON CONFLICT alike),
    made once: the request rows, each inserted once; the daily rows, added to."""
    dialect: Any = sqlite if sqlite_ else postgresql
    requests = (
        dialect.insert(usage_requests)
        .on_conflict_do_nothing()
        .returning(usage_requests.c.origin, usage_requests.c.seq)
    )
    daily = dialect.insert(usage_daily)
    add_to_days = daily.on_conflict_do_update(
        index_elements=list(_DAILY_KEY),
        set_={name: usage_daily.c[name] + daily.excluded[name] for name in _SUMS},
    )
    return requests, add_to_days


def _request_row(e: LedgerEntry) -> dict[str, object]:
    return {
        "origin": e.origin,
        "seq": e.seq,
        "request_id": e.request_id,
        "owner": e.owner,
        "model": e.model,
        "adapter": e.adapter,
        "api": e.api,
        "tier": e.tier,
        "via": e.via,
        "batch_id": e.batch_id,
        "created_at": e.created_at,
        "prompt_tokens": e.prompt_tokens,
        "cached_tokens": e.cached_tokens,
        "completion_tokens": e.completion_tokens,
        "cost_pico_usd": e.cost_pico_usd,
    }


def _days(entries: Iterable[LedgerEntry]) -> list[dict[str, object]]:
    """The daily rows `entries` add to, with what they add."""
    days: dict[tuple[str, str, str, str, str], list[int]] = {}
    for e in entries:
        key = (day_of(e.created_at), e.owner, e.model, e.adapter or "", e.tier)
        sums = days.get(key)
        if sums is None:
            sums = days[key] = [0, 0, 0, 0, 0]
        sums[0] += 1
        sums[1] += e.prompt_tokens
        sums[2] += e.cached_tokens
        sums[3] += e.completion_tokens
        sums[4] += e.cost_pico_usd
    # In the order of the key, so that two writers add to the same rows without a deadlock.
    return [
        dict(zip(_DAILY_KEY, key, strict=True)) | dict(zip(_SUMS, sums, strict=True))
        for key, sums in sorted(days.items())
    ]


def costs(store: Store, owner: str, ids: Sequence[str]) -> dict[str, int]:
    """The cost in 1e-12 USD of each of `ids` that names requests of `owner`: its request id,
    or one with a known prefix (`chatcmpl-<id>`). Several requests under one id add up (a
    client may send the same X-Request-ID twice)."""
    wanted: dict[str, list[str]] = {}  # stored id -> the ids asked for that may name it
    for asked in ids:
        wanted.setdefault(asked, []).append(asked)
        for prefix in ID_PREFIXES:
            if asked.startswith(prefix) and len(asked) > len(prefix):
                wanted.setdefault(asked[len(prefix) :], []).append(asked)
    c = usage_requests.c
    found: dict[str, int] = {}
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(c.request_id, c.cost_pico_usd).where(
                c.owner == owner, c.request_id.in_(list(wanted))
            )
        ).all()
    for request_id, cost in rows:
        found[request_id] = found.get(request_id, 0) + cost
    out: dict[str, int] = {}
    for asked in dict.fromkeys(ids):
        if asked in found:  # the id as given first: a client's own id may look prefixed
            out[asked] = found[asked]
            continue
        for prefix in ID_PREFIXES:
            if asked.startswith(prefix) and asked[len(prefix) :] in found:
                out[asked] = found[asked[len(prefix) :]]
                break
    return out


@dataclass(frozen=True, slots=True)
class DailyUsage:
    day: str
    owner: str
    model: str
    adapter: str  # "" for the model itself
    tier: str
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_pico_usd: int

    @property
    def served_as(self) -> str:
        """The model name the requests named: the adapter's, or the model's."""
        return self.adapter or self.model


def daily(store: Store, first: date, last: date, owner: str | None = None) -> list[DailyUsage]:
    """The daily rows from `first` to `last` (both included), of `owner` or of every key; by
    day, key, model, adapter and tier."""
    c = usage_daily.c
    query = select(*(c[name] for name in (*_DAILY_KEY, *_SUMS))).where(
        c.day >= first.isoformat(), c.day <= last.isoformat()
    )
    if owner is not None:
        query = query.where(c.owner == owner)
    with store.engine.connect() as conn:
        rows = conn.execute(query.order_by(*(c[name] for name in _DAILY_KEY))).all()
    return [DailyUsage(*row) for row in rows]


def purge(store: Store, retention_days: float, now: float | None = None) -> int:
    """Delete the request rows older than the retention; the daily rows stay. How many went."""
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    with store.engine.begin() as conn:
        return conn.execute(
            delete(usage_requests).where(usage_requests.c.created_at < cutoff)
        ).rowcount
