"""Who may take a place in the model's capacity, and when: per-key concurrency and the
service tiers' shares, counted across every API process of the server.

A request counts against its key from the moment it is accepted until its last byte (a flex
request waiting for room included), and against the model once admitted:

- a key past its `rate_limit` gets 429 "Rate limited" (its own limit; others are served);
- default is admitted while fewer than `limit` default and priority requests run, else 429
  "Model busy";
- priority is admitted on a reserve above that (`limit + reserve`), so it keeps being served
  while default gets "Model busy", and the engine schedules it first;
- flex is admitted only into room default is not using (default, priority and flex together
  below `limit`) and within its own share; flex never counts against default's limit, so no
  default request is refused because of flex. Until there is room it waits, first come first
  served within the process, up to its bound (429 past it); it leaves the queue at once when
  its client goes away (its task is cancelled) and is answered 503 when the server drains.

The counts live in one shared array with one lock (`lifecycle.SharedState`) when several API
processes share the engine; a flex waiter learns of room freed by another process by looking
again every `_LOOK_AGAIN_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..config.served import Tenant
from ..config.tiers import Tier, TierPolicy
from ..engine.errors import (
    APIError,
    flex_timed_out,
    model_busy,
    rate_limited,
    shutting_down,
)
from ..engine.lifecycle import Lifecycle
from ..observability import metrics

_RUNNING, _FLEX, _BATCH = 0, 1, 2  # the model's counts: default and priority; flex; batch
_KEYS = COUNTS_BEFORE_KEYS = 3  # a tenant's count is at _KEYS + its index
_LOOK_AGAIN_S = 0.25


@dataclass(slots=True)
class Place:
    """What one request holds: its key's count and, once admitted, its tier's."""

    capacity: Capacity
    key: int  # its tenant's count in the counts; -1: no keys configured
    column: int = -1  # _RUNNING, _FLEX or _BATCH once admitted
    released: bool = False

    def again(self) -> Place:
        """The same place once more, unchecked: a webhook's generation, which outlives the
        request that was admitted for it."""
        return self.capacity.hold_again(self)

    def release(self) -> None:
        self.capacity.release(self)


class Capacity:
    def __init__(
        self,
        policy: TierPolicy,
        lifecycle: Lifecycle,
        keys: int,
        model: str,
        shared: Any = None,
    ) -> None:
        self.policy = policy
        self.lifecycle = lifecycle
        if shared is None:
            self._counts: Any = [0] * (_KEYS + keys)
            self._lock: Any = contextlib.nullcontext()
        else:
            self._counts = shared
            self._lock = shared.get_lock()
        self._flex_queue: deque[object] = deque()
        # Set when an online request is admitted while batch lines run, so that they make way
        # at once (`batch_work`), not at the batch loop's next look.
        self.batch_wake: asyncio.Event | None = None
        self._room = asyncio.Event()
        self._model = model
        self._waiting = metrics.FLEX_WAITING.labels(model)

    def counts(self) -> tuple[int, int]:
        """(default and priority, flex) requests admitted across the server."""
        return self._counts[_RUNNING], self._counts[_FLEX]

    def take(self, tenant: Tenant | None, tier: Tier) -> Place:
        """A place for a default or priority request, or the 429 that says why not."""
        counts, policy = self._counts, self.policy
        room = policy.limit + (policy.reserve if tier.name == "priority" else 0)
        with self._lock:
            if tenant is not None and counts[_KEYS + tenant.index] >= tenant.rate_limit:
                raise self._refused(tier, "rate_limited", rate_limited())
            if counts[_RUNNING] >= room:
                raise self._refused(tier, "model_busy", model_busy())
            counts[_RUNNING] += 1
            key = -1
            if tenant is not None:
                key = _KEYS + tenant.index
                counts[key] += 1
            batch = counts[_BATCH]
        if batch and self.batch_wake is not None:
            self.batch_wake.set()
        self.lifecycle.in_flight += 1
        self._admitted(tier, 0.0)
        return Place(self, key, _RUNNING)

    async def wait_flex(self, tenant: Tenant | None, tier: Tier, max_wait_s: float) -> Place:
        """A place for a flex request (or for work no client waits on) once there is room,
        waiting up to `max_wait_s`."""
        counts = self._counts
        with self._lock:
            if tenant is not None and counts[_KEYS + tenant.index] >= tenant.rate_limit:
                raise self._refused(tier, "rate_limited", rate_limited())
            key = -1
            if tenant is not None:
                key = _KEYS + tenant.index
                counts[key] += 1
        place = Place(self, key)
        self.lifecycle.in_flight += 1
        # Flex within its share; work no client waits on (a webhook job run again) in any room.
        slots = self.policy.flex_slots if tier.name == "flex" else self.policy.limit
        me = object()
        self._flex_queue.append(me)
        self._waiting.inc()
        started = time.monotonic()
        deadline = started + max_wait_s
        try:
            while True:
                if self.lifecycle.draining:
                    raise self._refused(tier, "shutting_down", shutting_down())
                if self._flex_queue[0] is me and self._admit_flex(place, slots):
                    self._admitted(tier, time.monotonic() - started)
                    return place
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._refused(tier, "flex_timeout", flex_timed_out(max_wait_s))
                self._room.clear()
                look = min(left, _LOOK_AGAIN_S) if self._flex_queue[0] is me else left
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(look):
                        await self._room.wait()
        except BaseException:
            self.release(place)  # the client went away, or it was refused
            raise
        finally:
            self._flex_queue.remove(me)
            self._waiting.dec()
            self._room.set()  # the next in line looks

    def _admit_flex(self, place: Place, slots: int) -> bool:
        counts, policy = self._counts, self.policy
        with self._lock:
            if counts[_FLEX] >= slots:
                return False
            if counts[_RUNNING] + counts[_FLEX] >= policy.limit:
                return False
            counts[_FLEX] += 1
            batch = counts[_BATCH]
        if batch and self.batch_wake is not None:
            self.batch_wake.set()
        place.column = _FLEX
        return True

    def take_batch(self, n: int) -> list[Place]:
        """Up to `n` places for batch lines, in the room nothing else uses; none while a flex
        request waits. A batch line counts against no key: a tenant's batch never takes room
        from its own online requests."""
        if self._flex_queue or n <= 0:
            return []
        counts, limit = self._counts, self.policy.limit
        with self._lock:
            room = limit - counts[_RUNNING] - counts[_FLEX] - counts[_BATCH]
            taken = max(0, min(n, room))
            counts[_BATCH] += taken
        self.lifecycle.in_flight += taken
        return [Place(self, -1, _BATCH) for _ in range(taken)]

    def hold_again(self, place: Place) -> Place:
        with self._lock:
            if place.column >= 0:
                self._counts[place.column] += 1
            if place.key >= 0:
                self._counts[place.key] += 1
        self.lifecycle.in_flight += 1
        return Place(self, place.key, place.column)

    def release(self, place: Place) -> None:
        if place.released:
            return
        place.released = True
        with self._lock:
            if place.column >= 0:
                self._counts[place.column] -= 1
            if place.key >= 0:
                self._counts[place.key] -= 1
        self.lifecycle.in_flight -= 1
        if self._flex_queue:
            self._room.set()

    def _admitted(self, tier: Tier, waited_s: float) -> None:
        metrics.tier_outcome(self._model, tier.name, "admitted").inc()
        metrics.child(metrics.ADMISSION_WAIT, self._model, tier.name).observe(waited_s)

    def _refused(self, tier: Tier, reason: str, err: APIError) -> APIError:
        metrics.tier_outcome(self._model, tier.name, reason).inc()
        return err
