"""Batch lines claimed to run: a few at a time, by the replicas that serve their model.

A line is claimed with a lease (`claim`): its runner renews the lease while it runs it
(`renew`), and a line whose lease ran out (its runner died) is claimable again. A result
counts only from the line's latest claim (`finish` matches the claim number), so a line is
written, and billed, once. A runner that will not finish its lines (it drains, or makes way
for online requests) hands them back (`hand_back`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, tuple_, update

from .database import Store
from .tables import batch_lines, batches


@dataclass(frozen=True, slots=True)
class Claimed:
    batch_id: str
    line: int
    custom_id: str
    body: str
    claim: int  # this claim's number: the result counts only if no later claim was made
    endpoint: str  # the batch's
    owner: str  # the batch's
    origin: str | None = None  # the batch's creating request's `traceparent`


@dataclass(frozen=True, slots=True)
class LineResult:
    state: str  # done, failed, or cancelled (stopped while it ran)
    result: str | None  # its line of the output or error file; None: written at the end
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def claim(store: Store, model: str, runner: str, n: int, lease_s: float) -> list[Claimed]:
    """Up to `n` lines of `model` to run: waiting ones, or running ones whose runner's lease ran
    out; oldest batch first, and within it lines that share a prompt prefix together."""
    now = time.time()
    c = batch_lines.c
    claimable = (
        select(c.batch_id, c.line)
        .where(
            c.model == model,
            or_(c.state == "waiting", and_(c.state == "running", c.lease_until < now)),
        )
        .order_by(c.batch_id, c.order_key, c.line)
        .limit(n)
        .with_for_update(skip_locked=True)
    )
    with store.engine.begin() as conn:
        rows = conn.execute(
            update(batch_lines)
            .where(tuple_(c.batch_id, c.line).in_(claimable))
            .values(state="running", runner=runner, lease_until=now + lease_s, claim=c.claim + 1)
            .returning(c.batch_id, c.line, c.custom_id, c.body, c.claim)
        ).all()
        ids = {r[0] for r in rows}
        of = {
            b: (endpoint, owner, origin)
            for b, endpoint, owner, origin in conn.execute(
                select(
                    batches.c.id, batches.c.endpoint, batches.c.owner, batches.c.traceparent
                ).where(batches.c.id.in_(ids))
            )
        }
    return [Claimed(b, n, cid, body, k, *of[b]) for b, n, cid, body, k in rows]


def renew(store: Store, runner: str, keys: Sequence[tuple[str, int]], lease_s: float) -> None:
    """Extend this runner's leases on the lines it is running."""
    _running(store, runner, keys, lease_until=time.time() + lease_s)


def hand_back(store: Store, runner: str, keys: Sequence[tuple[str, int]]) -> None:
    """Lines this runner will not finish (it drains, or makes way): waiting again, for any
    replica now."""
    _running(store, runner, keys, state="waiting", runner=None, lease_until=None)


def _running(store: Store, me: str, keys: Sequence[tuple[str, int]], **values: Any) -> None:
    """Set `values` on those of `keys` that runner `me` is running."""
    if not keys:
        return
    c = batch_lines.c
    with store.engine.begin() as conn:
        conn.execute(
            update(batch_lines)
            .where(c.runner == me, c.state == "running", tuple_(c.batch_id, c.line).in_(keys))
            .values(**values)
        )


def finish(store: Store, line: Claimed, result: LineResult) -> bool:
    """Record a line's result if `line` is still its latest claim (else another runner has it,
    and this result is dropped unbilled); whether it was recorded."""
    c = batch_lines.c
    with store.engine.begin() as conn:
        done = conn.execute(
            update(batch_lines)
            .where(
                c.batch_id == line.batch_id,
                c.line == line.line,
                c.claim == line.claim,
                c.state == "running",
            )
            .values(
                state=result.state,
                result=result.result,
                prompt_tokens=result.prompt_tokens,
                cached_tokens=result.cached_tokens,
                completion_tokens=result.completion_tokens,
                cost_usd=result.cost_usd,
                runner=None,
                lease_until=None,
            )
        )
    return done.rowcount == 1


def stopped(store: Store, batch_ids: Iterable[str]) -> dict[str, str]:
    """Of `batch_ids`, those whose running lines should stop, with the state they end in:
    cancelled, or expired."""
    ids = list(batch_ids)
    if not ids:
        return {}
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(batches.c.id, batches.c.status).where(
                batches.c.id.in_(ids),
                or_(batches.c.status == "cancelling", batches.c.expired_at.is_not(None)),
            )
        ).all()
    return {b: "cancelled" if status == "cancelling" else "expired" for b, status in rows}


def stop_abandoned(store: Store, now: float) -> None:
    """Running lines of cancelled or expired batches whose runner died: they end as such."""
    c = batch_lines.c
    with store.engine.begin() as conn:
        for state, condition in (
            ("cancelled", batches.c.status == "cancelling"),
            ("expired", batches.c.expired_at.is_not(None)),
        ):
            ids = select(batches.c.id).where(condition).scalar_subquery()
            conn.execute(
                update(batch_lines)
                .where(c.batch_id.in_(ids), c.state == "running", c.lease_until < now)
                .values(state=state)
            )
