"""The server's one state, from loading to dead, and what it means for probes, admission and
the ready gauge.

    loading -> ready -> draining         (SIGTERM: finish what is in flight, take nothing new)
       |         |
       v         v
    failed     dead -> failed           (the engine could not start / died or hangs: the
                                         process exits and is restarted)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..observability import metrics


@dataclass(frozen=True)
class SharedState:
    """What the API processes over one engine core share (multiprocessing values): the
    admission counts that the limits bound (`http.capacity`), and whether the engine core has
    died (set by the parent process, which is the one that can see it)."""

    counts: Any  # Array("i"), with its lock
    core_dead: Any  # RawValue("b")


class Phase(StrEnum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"
    DEAD = "dead"


class Lifecycle:
    """Owned by the app; the admission middleware, the probes, the engine watchdog and the
    CLI's SIGTERM handler all read and move this one object."""

    def __init__(self, model_name: str, shared: SharedState | None = None) -> None:
        self._phase = Phase.LOADING
        self._shared = shared
        self._gauge = metrics.ENGINE_READY.labels(model_name)
        self._gauge.set(0)
        self.engine: Any = None  # the ServedModel once it is up
        self._stalled = False
        # Requests being served (until their last byte) and webhook generations in this
        # process (`http.capacity` counts them, and bounds them across the server).
        self.in_flight = 0
        self.background = 0  # webhook jobs (generation and delivery) that SIGTERM waits for

    @property
    def phase(self) -> Phase:
        # A dead engine cannot come back; the probes say so from the moment it died, before
        # the watchdog's next look.
        if self._stalled or self.core_died or (self.engine is not None and self.engine.errored):
            return Phase.DEAD
        return self._phase

    @property
    def core_died(self) -> bool:
        """The engine core serving several API processes died (their engine clients cannot
        see it; the parent process can)."""
        return self._shared is not None and bool(self._shared.core_dead.value)

    @property
    def dead(self) -> bool:
        return self.phase is Phase.DEAD

    @property
    def busy(self) -> bool:
        return bool(self.in_flight or self.background)

    @property
    def loading(self) -> bool:
        return self._phase is Phase.LOADING

    @property
    def draining(self) -> bool:
        """New API requests are refused: shutting down, or past the point of serving."""
        return self._phase in (Phase.DRAINING, Phase.FAILED)

    def ready(self, engine: Any) -> None:
        self.engine = engine
        self._phase = Phase.READY
        self._gauge.set(1)

    def drain(self) -> None:
        if self._phase is not Phase.FAILED:
            self._phase = Phase.DRAINING
        self._gauge.set(0)

    def lost(self, *, stalled: bool = False) -> None:
        """The watchdog saw the engine die, or make no progress while it had work (`stalled`:
        as good as dead, which the engine itself cannot tell): no more traffic, whatever the
        phase was."""
        self._stalled = self._stalled or stalled
        self._gauge.set(0)

    def fail(self) -> None:
        self._phase = Phase.FAILED
        self._gauge.set(0)
