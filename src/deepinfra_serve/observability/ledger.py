"""The usage ledger's queue: every billed request becomes one entry, handed over by
`accounting.account` and written to the store by a background writer, off the request's path.

The request path only appends to a bounded queue. The writer takes what has gathered, at most
a few times a second, and writes it in one transaction (`store.usage.write`); while the store
is slow or down the entries wait and are written once it is back. Only the bound forces any
out, the oldest first, and each is counted (`deepinfra_ledger_records_dropped`) and logged.
Entries are named (origin, seq) once, so a write retried after a lost answer adds nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

WRITTEN = Counter(
    "deepinfra_ledger_records_written", "Usage ledger entries written to the store.", ["model"]
)
DROPPED = Counter(
    "deepinfra_ledger_records_dropped",
    "Usage ledger entries forced out of a full queue (the store was down or slow), or left "
    "unwritten at shutdown: billed, but not in the ledger.",
    ["model"],
)
QUEUED = Gauge(
    "deepinfra_ledger_records_queued",
    "Usage ledger entries waiting to be written.",
    ["model"],
    multiprocess_mode="livesum",
)
WRITE_SECONDS = Histogram(
    "deepinfra_ledger_write_seconds",
    "Time to write one group of usage ledger entries (failed writes included).",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WRITE_ERRORS = Counter(
    "deepinfra_ledger_write_errors", "Usage ledger writes the store failed.", ["model"]
)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One billed request: the numbers its client, its access line and Prometheus saw."""

    origin: str  # the process that billed it
    seq: int  # its number there
    request_id: str
    owner: str  # the API key's digest; "" on an open server
    model: str  # the card's model
    adapter: str | None  # the LoRA adapter it was served through
    api: str
    tier: str
    via: str  # http, background (a webhook job) or batch
    batch_id: str | None
    created_at: float  # when it ended
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    cost_pico_usd: int  # `estimated_cost` (rounded to 1e-12 USD) in 1e-12 USD


Write = Callable[[Sequence[LedgerEntry]], Awaitable[object]]


class Ledger:
    """The bounded queue and its writer, one per API process."""

    # The writer writes at most this often, so that a busy server writes a few large groups a
    # second rather than one transaction per request; sooner when half the bound has gathered.
    INTERVAL_S = 0.25
    BATCH_MAX = 2000
    RETRY_MAX_S = 5.0

    def __init__(self, model: str, max_queued: int) -> None:
        self.model = model
        self.max_queued = max_queued
        self.origin = secrets.token_hex(8)
        self._seq = 0
        self._queue: deque[LedgerEntry] = deque()
        self._idle = False  # the writer waits for a first entry (else it pauses between writes)
        self._wake = asyncio.Event()
        self._closing = False
        self._written = WRITTEN.labels(model)
        self._dropped = DROPPED.labels(model)
        self._queued = QUEUED.labels(model)
        self._write_s = WRITE_SECONDS.labels(model)
        self._errors = WRITE_ERRORS.labels(model)
        self._dropped_since_log = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def add(self, entry: LedgerEntry) -> None:
        """Hand one entry over: an append, never a wait."""
        queue = self._queue
        queue.append(entry)
        if len(queue) > self.max_queued:
            self._drop_over_bound()
        if self._idle or len(queue) * 2 >= self.max_queued:
            self._wake.set()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def run(self, write: Write) -> None:
        """Write what gathers until `close`; a failed write is retried, backing off."""
        backoff = self.INTERVAL_S
        while not self._closing or self._queue:
            self._queued.set(len(self._queue))
            if self._dropped_since_log:
                log.error(
                    "usage ledger: %d entries forced out of the full queue (bound %d), "
                    "billed but not recorded",
                    self._dropped_since_log,
                    self.max_queued,
                )
                self._dropped_since_log = 0
            if not self._queue:
                self._idle = True
                await self._wait(None)
                self._idle = False
                continue
            if await self._write_some(write):
                backoff = self.INTERVAL_S
                if not self._closing:
                    await self._wait(self.INTERVAL_S)
            else:  # closing too: tried again until `close` gives up
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.RETRY_MAX_S)
        self._queued.set(0)

    async def _write_some(self, write: Write) -> bool:
        queue = self._queue
        group = [queue.popleft() for _ in range(min(len(queue), self.BATCH_MAX))]
        started = time.perf_counter()
        try:
            await write(group)
        except asyncio.CancelledError:
            queue.extendleft(reversed(group))
            raise
        except Exception as exc:  # the store is down or refused: kept, and tried again
            self._errors.inc()
            queue.extendleft(reversed(group))
            self._drop_over_bound()
            self._queued.set(len(queue))
            log.warning("usage ledger: %d entries wait for the store: %s", len(queue), exc)
            return False
        finally:
            self._write_s.observe(time.perf_counter() - started)
        self._written.inc(len(group))
        return True

    def _drop_over_bound(self) -> None:
        over = len(self._queue) - self.max_queued
        for _ in range(over):
            self._queue.popleft()
        if over > 0:
            self._dropped.inc(over)
            self._dropped_since_log += over

    async def _wait(self, timeout_s: float | None) -> None:
        self._wake.clear()
        if self._closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    async def close(self, run: asyncio.Task[None], timeout_s: float) -> None:
        """Write what is queued (for at most `timeout_s`), then stop; what could not be written
        is counted as dropped and logged."""
        self._closing = True
        self._wake.set()
        done, _ = await asyncio.wait([run], timeout=timeout_s)
        if not done:
            run.cancel()
            await asyncio.wait([run])
        left = len(self._queue)
        if left:
            self._dropped.inc(left)
            log.error(
                "usage ledger: %d entries not written at shutdown (the store did not answer)", left
            )
            self._queue.clear()
        self._queued.set(0)
