"""Work no client waits on, from the store: batches' lines, and webhook jobs a replica that
died left behind.

Each replica runs the lines of the model it serves, in the room online traffic leaves, behind
every online request in the engine's queue.

One loop per API process:
- takes places in the room nothing else uses (`Capacity.take_batch`: none while a flex request
  waits), claims as many lines from the store (`store.claims.claim`, with a lease), and runs
  each through `Runner.run` at the batch tier (the card's batch price, the engine's lowest
  priority), its access line naming the batch and the line's `custom_id`;
- records each result under its claim (`store.claims.finish`), and only then bills it, so a
  line is written and billed once; renews its leases while it runs them;
- stops the lines of a batch cancelled or expired, ends batches none of whose lines is left
  (`finalize`), expires batches and files whose time is up, and publishes the gauges;
- beside online requests keeps only a tenth as many lines running as they are, stopping and
  handing back the newest of the rest (unbilled, run again later);
- when the server drains, hands its lines back at once (their partial work is not billed) for
  any replica to run again;
- renews its claim on the webhook jobs its native API runs, and runs and delivers those whose
  runner's claim ran out (`store.webhook_jobs`), as flex would wait for room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..batch.results import result_line, unrun_line
from ..config.cards import ModelCard
from ..config.settings import ServerSettings
from ..config.tiers import Tier
from ..engine.call import Outcome
from ..engine.errors import APIError
from ..engine.lifecycle import Lifecycle
from ..observability import metrics
from ..observability.record import RequestRecord
from ..store import batches, claims, files, webhook_jobs
from ..store.claims import Claimed, LineResult
from ..store.database import Store
from .auth import ApiKeys
from .capacity import Capacity, Place
from .route_table import Route
from .runner import Admission, Runner

log = logging.getLogger(__name__)

_TICK_S = 0.25  # how often the loop looks: a drain hands lines back within this
_SWEEP_S = 1.0  # cancellations, batches to end, expiry
_GAUGES_S = 5.0  # the store's counts for the gauges (a count over the model's open lines)
# Lines that may run beside online requests, per online request in flight: on an engine whose
# steps slow with every sequence (a CPU, a GPU at its compute bound), more would take their share
# of each step from online traffic.
_BESIDE_ONLINE = 0.1


class BatchWork:
    def __init__(
        self,
        *,
        runner: Runner,
        store: Store,
        card: ModelCard,
        settings: ServerSettings,
        lifecycle: Lifecycle,
        capacity: Capacity,
        api_keys: ApiKeys,
        routes: dict[str, Route],  # the routes a batch's endpoint names
        native: Route,  # the native API's route, which webhook jobs run on
        services: Callable[[str], Any],  # an API's services by name, once the engine is up
    ) -> None:
        self.runner, self.store, self.card = runner, store, card
        self.lifecycle, self.capacity, self.api_keys = lifecycle, capacity, api_keys
        self.routes, self.native, self.services = routes, native, services
        self.lease_s = settings.batch_lease_s
        self.output_ttl_s = settings.output_file_ttl_s
        self.tier = Tier.batch(card.pricing.batch_multiplier)
        self.name = store.runner
        self.running: dict[tuple[str, int], tuple[asyncio.Task[None], RequestRecord]] = {}
        self._stopping: dict[str, str] = {}  # batch id -> how its running lines end
        self._wake = asyncio.Event()
        capacity.batch_wake = self._wake  # an online request admitted: make way at once
        self._gauges = metrics.batch_gauges(card.name)
        self._published = 0.0

    async def run(self) -> None:
        """Until the server drains (or the task is cancelled): then hand back what runs."""
        last_sweep = last_renew = 0.0
        try:
            while not self.lifecycle.draining:
                now = time.monotonic()
                try:
                    await self._make_way()
                    await self._start_lines()
                    if now - last_renew > self.lease_s / 3:
                        last_renew = now
                        await self._renew()
                    if now - last_sweep > _SWEEP_S:
                        last_sweep = now
                        await self._sweep()
                except Exception:
                    log.exception("batch work: the store failed; trying again")
                    await asyncio.sleep(1.0)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_TICK_S):
                        await self._wake.wait()
        finally:
            await self._hand_back()

    def _allowed(self) -> int:
        """Lines this process may run now: all the idle room while no online request runs;
        beside online requests, a tenth as many as they are (none beside fewer than ten), so
        that online traffic keeps nearly all of the engine's steps."""
        running, flex = self.capacity.counts()
        online = running + flex
        return self.capacity.policy.limit if online == 0 else int(online * _BESIDE_ONLINE)

    async def _make_way(self) -> None:
        """Online requests arrived: the lines past what is allowed beside them, newest first,
        are stopped and handed back (unbilled) to run again when there is room."""
        excess = len(self.running) - self._allowed()
        if excess <= 0:
            return
        newest = list(self.running)[-excess:]
        await self._give_back(newest)
        metrics.BATCH_LINES_YIELDED.labels(self.card.name).inc(len(newest))

    async def _start_lines(self) -> None:
        # A share of the room at a time, so that the replicas of a model polling the same
        # store each take part of a batch rather than the first taking all of it.
        wanted = min(max(4, self.capacity.policy.limit // 8), self._allowed() - len(self.running))
        places = self.capacity.take_batch(wanted)
        if not places:
            return
        try:
            claimed = await self.store.call(
                claims.claim, self.store, self.card.name, self.name, len(places), self.lease_s
            )
        except BaseException:
            for place in places:
                place.release()
            raise
        for place in places[len(claimed) :]:
            place.release()
        for line, place in zip(claimed, places, strict=False):
            self._start(line, place)

    def _start(self, line: Claimed, place: Place) -> None:
        route = self.routes[line.endpoint]
        tenant = self.api_keys.by_owner(line.owner)
        record = self.runner.record(
            route,
            via="batch",
            tenant=tenant,
            batch=(line.batch_id, line.custom_id),
            origin=line.origin,
        )
        record.owner = line.owner
        record.place = place
        task = asyncio.create_task(self._run_line(line, route, record))
        self.running[(line.batch_id, line.line)] = (task, record)
        task.add_done_callback(lambda _: self._done(line))

    def _done(self, line: Claimed) -> None:
        self.running.pop((line.batch_id, line.line), None)
        self._wake.set()

    async def _run_line(self, line: Claimed, route: Route, record: RequestRecord) -> None:
        assert route.body is not None
        try:
            body = route.body.model_validate_json(line.body)
        except ValueError as exc:  # checked when the batch was made; a card changed since
            log.warning("batch %s line %d: %s", line.batch_id, line.line, exc)
            body = None
        outcome = None
        try:
            if body is not None:
                outcome = await self.runner.run(
                    route, body, record, admission=Admission.HELD, tier=self.tier, accounted=False
                )
        except asyncio.CancelledError:
            if record.billed:  # stopped: its batch was cancelled or expired
                state = self._stopping.get(line.batch_id, "cancelled")
                usage = record.usage
                result = LineResult(
                    state,
                    None,
                    usage.prompt_tokens,
                    usage.cached_tokens,
                    usage.completion_tokens,
                    usage.estimated_cost,
                )
                await self._finish(line, result, record)
            else:
                self.runner.account(record)  # handed back: its access line, nothing billed
            raise
        finally:
            if record.place is not None:
                record.place.release()
        if outcome is None:
            err = APIError(400, "body: no longer valid for this model", param="body")
            outcome = Outcome(400, None, err, record)
        await self._finish(
            line, result_line(line.custom_id, outcome, route.family.error_body), record
        )

    async def _finish(self, line: Claimed, result: LineResult, record: RequestRecord) -> None:
        """Record the line's result under its claim, and only then bill it: a result another
        run's claim superseded is logged unbilled."""
        if await self.store.call(claims.finish, self.store, line, result):
            metrics.BATCH_LINES.labels(self.card.name, result.state).inc()
        else:
            log.warning("batch %s line %d: claimed again elsewhere", line.batch_id, line.line)
            record.billed = False
        self.runner.account(record)

    async def _renew(self) -> None:
        store = self.store
        await store.call(claims.renew, store, self.name, list(self.running), self.lease_s)
        native = self.services("native")
        if native is not None and native.webhooks.kept:
            ids = list(native.webhooks.kept)
            await store.call(webhook_jobs.renew, store, self.name, ids, self.lease_s)

    async def _resume_webhook_jobs(self) -> None:
        """Jobs whose runner died: run here (as flex waits for room) and delivered."""
        native = self.services("native")
        if native is None:
            return
        store, route = self.store, self.native
        jobs = await store.call(
            webhook_jobs.claim, store, self.card.name, self.name, 8, self.lease_s
        )
        for job in jobs:
            assert route.body is not None
            try:
                body = route.body.model_validate_json(job.body)
            except ValueError:
                log.exception("webhook job %s: its body no longer validates", job.request_id)
                await store.call(webhook_jobs.forget, store, job.request_id)
                continue
            params = {"model": job.path}
            record = self.runner.record(
                route,
                via="background",
                params=params,
                request_id=job.request_id,
                tenant=self.api_keys.by_owner(job.owner),
                origin=job.origin,
            )
            record.owner = job.owner
            tier = self.capacity.policy.tiers.get(job.tier)
            log.info("webhook job %s: run again, its first runner is gone", job.request_id)
            native.resume(job, self.runner.run(route, body, record, params=params, tier=tier))

    async def _sweep(self) -> None:
        store = self.store
        await self._resume_webhook_jobs()
        self._stopping = await store.call(claims.stopped, store, {k[0] for k in self.running})
        for (batch_id, _), (task, _record) in list(self.running.items()):
            if batch_id in self._stopping:
                task.cancel()
        now = time.time()
        await store.call(batches.expire, store, int(now))
        await store.call(claims.stop_abandoned, store, now)
        for batch_id in await store.call(batches.ready_to_end, store):
            if await store.call(batches.finalize, store, batch_id, self.output_ttl_s, unrun_line):
                log.info("batch %s ended", batch_id)
        if now - self._published < _GAUGES_S:
            return
        self._published = now
        await store.call(files.expire, store, int(now))
        waiting, running, oldest = await store.call(batches.open_lines, store, self.card.name)
        by_status = await store.call(batches.by_status, store, self.card.name)
        self._gauges.publish(waiting, running, None if oldest is None else now - oldest, by_status)

    async def _hand_back(self) -> None:
        """The server drains: the lines running here go back to waiting, for any replica."""
        if self.running:
            await self._give_back(list(self.running))

    async def _give_back(self, keys: list[tuple[str, int]]) -> None:
        """Stop these lines (aborted in the engine, nothing billed) and put them back to wait."""
        stopping = [self.running[k] for k in keys if k in self.running]
        for task, record in stopping:
            record.billed = False
            task.cancel()
        await asyncio.gather(*(t for t, _ in stopping), return_exceptions=True)
        try:
            await self.store.call(claims.hand_back, self.store, self.name, keys)
            log.info("handed back %d batch lines", len(stopping))
        except Exception:
            log.exception(
                "could not hand back %d batch lines; their leases will run out", len(stopping)
            )
