"""Native requests answered `queued`, kept until their webhook is delivered: a server killed
before then leaves them to be run and delivered by itself once restarted, or by another
replica of the model, once its lease runs out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from .database import Store
from .tables import webhook_jobs


@dataclass(frozen=True, slots=True)
class WebhookJob:
    request_id: str
    model: str  # the card's name: which replicas may run it
    path: str  # the model as the request named it (`Owner/Name[:VERSION]`)
    body: str  # the request's body, as JSON, without its webhook
    webhook: str
    owner: str  # the API key's digest ("" on an open server)
    tier: str  # the service tier it was accepted at
    origin: str | None = None  # the accepting request's `traceparent`


def keep(store: Store, job: WebhookJob, runner: str, lease_s: float) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            insert(webhook_jobs).values(
                request_id=job.request_id,
                model=job.model,
                path=job.path,
                body=job.body,
                webhook=job.webhook,
                owner=job.owner,
                tier=job.tier,
                runner=runner,
                lease_until=time.time() + lease_s,
                created_at=int(time.time()),
                traceparent=job.origin,
            )
        )


def forget(store: Store, request_id: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(delete(webhook_jobs).where(webhook_jobs.c.request_id == request_id))


def renew(store: Store, runner: str, ids: Sequence[str], lease_s: float) -> None:
    if not ids:
        return
    c = webhook_jobs.c
    with store.engine.begin() as conn:
        conn.execute(
            update(webhook_jobs)
            .where(c.runner == runner, c.request_id.in_(ids))
            .values(lease_until=time.time() + lease_s)
        )


def claim(store: Store, model: str, runner: str, n: int, lease_s: float) -> list[WebhookJob]:
    """Up to `n` jobs of `model` whose runner's lease ran out (it died), oldest first."""
    now = time.time()
    c = webhook_jobs.c
    claimable = (
        select(c.request_id)
        .where(c.model == model, c.lease_until < now)
        .order_by(c.created_at)
        .limit(n)
        .with_for_update(skip_locked=True)
    )
    with store.engine.begin() as conn:
        rows = conn.execute(
            update(webhook_jobs)
            .where(c.request_id.in_(claimable))
            .values(runner=runner, lease_until=now + lease_s)
            .returning(
                c.request_id, c.model, c.path, c.body, c.webhook, c.owner, c.tier, c.traceparent
            )
        ).all()
    return [WebhookJob(*r) for r in rows]
