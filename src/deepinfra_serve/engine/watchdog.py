"""Watching the engine: one that died, or one that hangs, takes the process down.

A dead engine cannot come back, and a hung one (a GPU hang, a stuck collective in a
tensor-parallel group, a process stopped by the kernel) looks alive to everything but this
check: it has work and returns nothing. Either way the probes fail, in-flight requests get
their error at once (not at the request timeout), and the process exits non-zero so that the
orchestrator restarts it. An idle engine returns nothing too, and is never judged hung.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..observability import metrics
from .lifecycle import Lifecycle
from .served_model import ServedModel

log = logging.getLogger(__name__)

_POLL_S = 0.5


async def watch_engine(
    model: ServedModel,
    lifecycle: Lifecycle,
    stall_timeout_s: float,
    on_fatal: Callable[[], None],
) -> None:
    last_progress = metrics.ENGINE_LAST_PROGRESS.labels(model.card.name)
    waiting_since = time.monotonic()  # the later of: last output, last seen idle
    while True:
        await asyncio.sleep(_POLL_S)
        if model.errored:
            log.critical("the inference engine died; exiting")
            lifecycle.lost()
            break
        if lifecycle.core_died:
            log.critical("the engine core died; exiting")
            lifecycle.lost()
            model.fail_in_flight("The inference engine died")  # its client cannot tell them
            break
        now = time.monotonic()
        progress = model.progress.last
        last_progress.set(time.time() - (now - progress))
        if not model.has_work:
            waiting_since = now
            continue
        silent = now - max(progress, waiting_since)
        if silent > stall_timeout_s:
            log.critical(
                "the inference engine made no progress for %.0f s with %d requests; exiting",
                silent,
                model.engine.get_num_unfinished_requests(),
            )
            lifecycle.lost(stalled=True)
            model.fail_in_flight(f"The inference engine made no progress for {stall_timeout_s:g} s")
            break
    await asyncio.sleep(1.0)  # in-flight requests get their errors out
    lifecycle.fail()
    on_fatal()
