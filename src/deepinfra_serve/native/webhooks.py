"""Delivering a finished inference to the caller's webhook, with bounded retries.

A webhook that never answers costs at most `attempts` requests of `timeout_s` each plus the
backoff between them; delivery runs in background tasks that shutdown waits for briefly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import httpx

log = logging.getLogger(__name__)


class WebhookSender:
    def __init__(
        self,
        *,
        attempts: int = 4,
        timeout_s: float = 10.0,
        backoff_s: float = 1.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._client = client or httpx.AsyncClient(follow_redirects=False)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def deliver(self, url: str, payload: bytes) -> bool:
        """POST `payload`; retry transport errors and non-2xx answers with doubling backoff."""
        for attempt in range(1, self.attempts + 1):
            try:
                r = await self._client.post(
                    url,
                    content=payload,
                    headers={"content-type": "application/json"},
                    timeout=self.timeout_s,
                )
                if r.is_success:
                    return True
                problem = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            log.warning("webhook attempt %d/%d failed: %s", attempt, self.attempts, problem)
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        log.error("webhook gave up after %d attempts", self.attempts)
        return False

    def submit(self, job: Coroutine[Any, Any, Any]) -> None:
        """Run `job` in the background, keeping a reference so it is not garbage-collected."""
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def aclose(self, grace_s: float = 10.0) -> None:
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in late:
                task.cancel()
        await self._client.aclose()
