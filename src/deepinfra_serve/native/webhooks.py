"""Delivering finished inferences to callers' webhooks: bounded retries, checked targets, and
nothing accepted lost on shutdown.

A job is a generation, run as a request of its own that no client waits on (`Call.detach`: it
keeps the HTTP request's place in the model's capacity, so a flood of webhook requests gets 429
like any other, and writes its own access line with its tokens and cost), and then its
delivery. The whole job counts as work that SIGTERM waits for. When the drain grace is over,
generations still running are stopped and delivered as `failed` with the reason, retries end
after the attempt under way, and what still cannot be delivered is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..engine.call import Outcome
from ..engine.errors import APIError, store_unavailable
from ..engine.lifecycle import Lifecycle
from ..observability import metrics
from ..store import webhook_jobs
from ..store.database import Store, StoreUnavailable
from ..store.webhook_jobs import WebhookJob
from .webhook_targets import PinnedTransport, TargetRefused, WebhookTargets

log = logging.getLogger(__name__)

# After the drain grace: how long the last attempts may take (inside the pod's termination
# grace, which exceeds the drain grace by more than this).
_FINAL_ATTEMPT_S = 5.0


@dataclass(frozen=True)
class Journal:
    """Where accepted jobs are kept until delivered (the store), and this process's claim on
    them."""

    store: Store
    runner: str  # this process, as the store knows its claims
    lease_s: float


class WebhookSender:
    def __init__(
        self,
        *,
        model: str,
        lifecycle: Lifecycle,
        targets: WebhookTargets,
        attempts: int = 4,
        timeout_s: float = 10.0,
        backoff_s: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.model = model
        self.lifecycle = lifecycle
        self.targets = targets
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.closing = False
        self._client = httpx.AsyncClient(
            transport=transport or PinnedTransport(targets), follow_redirects=False
        )
        self.journal = journal
        self.kept: set[str] = set()  # request ids of the jobs here that the journal holds
        self._jobs: set[asyncio.Task[Any]] = set()
        self._generating: set[asyncio.Future[Any]] = set()

    async def check(self, url: str) -> None:
        """422 naming `webhook` for a target the server must not call."""
        try:
            await self.targets.check(url)
        except TargetRefused as exc:
            raise APIError(
                422,
                f"webhook: not an allowed target ({exc})",
                param="webhook",
                code="invalid_value",
            ) from exc

    async def keep(self, job: WebhookJob) -> None:
        """Write the job to the journal before it is answered `queued`: from then on a crash
        loses nothing (another run delivers it)."""
        if self.journal is not None:
            journal = self.journal
            try:
                await journal.store.call(
                    webhook_jobs.keep, journal.store, job, journal.runner, journal.lease_s
                )
            except StoreUnavailable:
                raise store_unavailable() from None  # not accepted: the client may retry
            self.kept.add(job.request_id)

    def submit(
        self,
        url: str,
        request_id: str,
        generate: Awaitable[Outcome],
        failed: Callable[[str], bytes],
    ) -> None:
        """Run `generate` (a finished inference's outcome) and deliver its answer in the
        background; `failed(reason)` is the payload when it cannot finish. A job the journal
        holds leaves it once its delivery ends, whatever the end."""
        self.lifecycle.background += 1  # the job, until its delivery ends
        task = asyncio.create_task(self._job(url, request_id, generate, failed))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _job(
        self,
        url: str,
        request_id: str,
        generate: Awaitable[Outcome],
        failed: Callable[[str], bytes],
    ) -> None:
        generation = asyncio.ensure_future(generate)
        self._generating.add(generation)
        try:
            try:
                outcome = await asyncio.shield(generation)
                if outcome.error is not None or outcome.answer is None:
                    message = "no answer" if outcome.error is None else outcome.error.message
                    payload = failed(f"the generation failed: {message}")
                elif isinstance(outcome.answer, bytes):
                    payload = outcome.answer
                else:
                    payload = outcome.answer.model_dump_json().encode()
            except asyncio.CancelledError:
                if not generation.cancelled():
                    raise
                reason = "the server shut down before the generation finished"
                log.warning("webhook %s: %s", request_id, reason)
                metrics.WEBHOOKS_CUT_SHORT.labels(self.model).inc()
                payload = failed(reason)
            except Exception as exc:
                log.exception("inference %s for a webhook failed", request_id)
                payload = failed(f"the generation failed: {exc}")
            finally:
                self._generating.discard(generation)
            delivered = await self.deliver(url, payload)
            metrics.WEBHOOK_DELIVERIES.labels(self.model, str(delivered).lower()).inc()
            await self._forget(request_id)
        finally:
            self.lifecycle.background -= 1

    async def _forget(self, request_id: str) -> None:
        if self.journal is None or request_id not in self.kept:
            return
        self.kept.discard(request_id)
        try:
            await self.journal.store.call(webhook_jobs.forget, self.journal.store, request_id)
        except Exception:
            log.exception("webhook job %s: delivered, but still in the store", request_id)

    async def deliver(self, url: str, payload: bytes) -> bool:
        """POST `payload`; retry transport errors and non-2xx answers with doubling backoff
        (no more retries once the server is closing)."""
        for attempt in range(1, self.attempts + 1):
            try:
                r = await self._client.post(
                    url,
                    content=payload,
                    headers={"content-type": "application/json"},
                    timeout=_FINAL_ATTEMPT_S if self.closing else self.timeout_s,
                )
                if r.is_success:
                    return True
                problem = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            log.warning("webhook attempt %d/%d failed: %s", attempt, self.attempts, problem)
            if attempt < self.attempts and not self.closing:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            elif self.closing:
                break
        log.error("webhook not delivered after %d attempts", attempt)
        return False

    @property
    def pending(self) -> int:
        return len(self._jobs)

    async def aclose(self) -> None:
        """At shutdown, after the drain grace: stop the generations still running (their
        webhooks get `failed`), let the last attempts finish, then give up on the rest."""
        self.closing = True
        for generation in list(self._generating):
            generation.cancel()
        if self._jobs:
            _, late = await asyncio.wait(self._jobs, timeout=_FINAL_ATTEMPT_S + 1)
            for task in late:
                task.cancel()
            if late:
                log.error("%d webhook deliveries abandoned at shutdown", len(late))
                metrics.WEBHOOK_DELIVERIES.labels(self.model, "false").inc(len(late))
        await self._client.aclose()
