"""Runs a validated request of any route of the table, with or without an HTTP connection.

What a request is served as (the model it names, at its version and price; its tier; its
tenant's part of the prefix cache) is resolved here once, onto its record, and its API's
services are found here ("no services yet" is a 503 said once). The dispatcher (`dispatch`)
runs an HTTP request's call under its connection's deadline and disconnect; `run` runs one no
client waits on (a webhook job, a batch line) to its end, under the admission its caller
chooses, and accounts for it as the middleware does for an HTTP request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from starlette.datastructures import State

from ..config.catalog import Catalog
from ..config.served import Served, Tenant
from ..config.tiers import Tier
from ..engine.call import Call, Outcome
from ..engine.errors import APIError, model_loading, store_unavailable, timed_out
from ..engine.generation import Raw, Stream
from ..observability.accounting import account
from ..observability.ledger import Ledger
from ..observability.record import RequestRecord, bind, new_request_id, unbind
from ..store.database import StoreUnavailable
from .capacity import Capacity
from .families import served_as
from .lifetime import CLIENT_CLOSED, engine_failure
from .route_table import Route

if TYPE_CHECKING:  # imported only when tracing is on (`observability.tracing`)
    from ..observability.spans import Tracing

log = logging.getLogger(__name__)

_NO_PARAMS: Mapping[str, str] = {}


class Admission(StrEnum):
    """How a request gets its place in the model's capacity."""

    TIER = "tier"  # as its tier says: default and priority now or 429, flex waits for room
    WAIT = "wait"  # waits for room as flex does, whatever its tier: work no client waits on
    HELD = "held"  # its caller holds a place for it already


class Runner:
    def __init__(
        self,
        state: State,
        catalog: Catalog,
        ledger: Ledger | None,
        tracing: Tracing | None = None,
    ) -> None:
        self.state = state
        self.catalog = catalog
        self.ledger = ledger
        self.tracing = tracing  # None: tracing is off

    def account(self, record: RequestRecord) -> None:
        """`accounting.account`, with this server's usage ledger."""
        account(record, self.ledger)

    async def call(
        self, route: Route, body: Any, params: Mapping[str, str], record: RequestRecord
    ) -> Call[Any, Any]:
        """The request as its handler gets it; 404 or 400 for a model not served here through
        this API, 503 while its API has no services."""
        state = self.state
        if route.model_in is not None:
            model = params["model"] if route.model_in == "path" else body.model
            record.served = await self._served(route, model, record.tenant)
        if record.tenant is not None and not state.shared_prompt_cache:
            record.cache_salt = record.tenant.cache_salt
        if route.tiered:
            record.tier = state.capacity.policy.applied(body.service_tier)
        services: Any = self.catalog
        if route.store:
            services = state.store_services.get(route.family.name)
            if services is None:
                raise store_unavailable()
        elif route.lora:
            services = state.lora_services
        elif route.admitted:
            services = state.apis.get(route.family.name)
            if services is None:
                raise model_loading()
        return Call(
            services, body, params, record, lambda b: self._detached(route, b, params, record)
        )

    async def _served(self, route: Route, model: str, tenant: Tenant | None) -> Served:
        """The card's model, or the LoRA adapter of that name: the card's, or one added at
        run time by this key (another key's is a model that does not exist)."""
        card = self.state.card
        name = model.partition(":")[0]
        adapter = None
        if name != card.name:
            adapter = await self.state.adapters.find(name)
            owner = "" if tenant is None else tenant.owner
            if adapter is not None and adapter.owner not in (None, owner):
                adapter = None
        return served_as(card, model, route.family, adapter)

    async def admit(self, route: Route, record: RequestRecord, how: Admission) -> None:
        """Its place in the model's capacity (its key's limit, its tier's share) onto its
        record, or the 429 or 503 that says why not."""
        if not (route.admitted and route.holds_place) or how is Admission.HELD:
            return
        trace = record.trace
        if trace is None:
            record.place = await self._place(record, how)
            return
        with trace.admission():
            record.place = await self._place(record, how)

    async def _place(self, record: RequestRecord, how: Admission) -> Any:
        capacity: Capacity = self.state.capacity
        tenant, tier = record.tenant, record.tier
        if how is Admission.TIER and tier.name != "flex":
            return capacity.take(tenant, tier)
        return await capacity.wait_flex(tenant, tier, self.state.flex_max_wait_s)

    def record(
        self,
        route: Route,
        *,
        via: str,
        params: Mapping[str, str] = _NO_PARAMS,
        request_id: str | None = None,
        tenant: Tenant | None = None,
        batch: tuple[str, str] | None = None,
        origin: str | None = None,
    ) -> RequestRecord:
        """A record for a request no client waits on, named in its access line by `via`;
        traced, when the server traces, as a trace of its own linked to `origin` (the
        `traceparent` of the request that created it)."""
        record = RequestRecord(
            request_id=request_id or new_request_id(),
            model=self.state.card.name,
            method=route.method,
            path=route.path_for(params),
            via=via,
            route=route,
            tenant=tenant,
            batch=batch,
        )
        if self.tracing is not None:
            record.trace = self.tracing.work(record, origin)
        return record

    async def run(
        self,
        route: Route,
        body: Any,
        record: RequestRecord,
        *,
        params: Mapping[str, str] = _NO_PARAMS,
        admission: Admission = Admission.WAIT,
        timeout_s: float | None = None,
        tier: Tier | None = None,
        accounted: bool = True,
    ) -> Outcome:
        """Run one request to its end with no client waiting: its answer whole (a stream's
        frames joined), or its error as the API would answer it; billed, metered and logged
        (`accounting.account`) whatever the end. Only a cancellation from outside raises.
        `tier`: the tier it is served and billed at, whatever its body asks (a batch line).
        `accounted` False: the caller accounts for it (`accounting.account`) once it knows the
        work counts (a batch line, once its result is recorded under its claim)."""
        timeout_s = timeout_s or self.state.request_timeout_s
        token = bind(record)
        try:
            error: APIError | None = None
            try:
                call = await self.call(route, body, params, record)
                if tier is not None:
                    record.tier = tier
                await self.admit(route, record, admission)
                async with asyncio.timeout(timeout_s):
                    answer = await _whole(await route.handle(call))
            except APIError as exc:
                error = exc
            except TimeoutError:
                error = timed_out(timeout_s)
            except StoreUnavailable:
                error = store_unavailable()
            except asyncio.CancelledError:
                record.status = CLIENT_CLOSED
                raise
            except Exception as exc:
                log.exception("request failed")
                error = engine_failure(exc)
            if error is not None:
                record.status = error.status
                return Outcome(error.status, None, error, record)
            record.status = 200
            return Outcome(200, answer, None, record)
        finally:
            if record.place is not None:
                record.place.release()
            unbind(token)
            if accounted:
                account(record, self.ledger)

    def _detached(
        self, route: Route, body: Any, params: Mapping[str, str], parent: RequestRecord
    ) -> Awaitable[Outcome]:
        """`body` on `route` again, as a request of its own that keeps `parent`'s place (taken
        now, before `parent` releases its own) and id; `Call.detach`."""
        record = RequestRecord(
            request_id=parent.request_id,
            model=parent.model,
            method=parent.method,
            path=parent.path,
            via="background",
            route=route,
            capture_content=parent.capture_content,
            source=parent.source,
            tenant=parent.tenant,
            owner=parent.owner,
            tier=parent.tier,
            place=None if parent.place is None else parent.place.again(),
        )
        if parent.trace is not None:
            record.trace = parent.trace.tracing.work(record, parent.trace.span)
        return self.run(route, body, record, params=params, admission=Admission.HELD)


async def _whole(answer: Any) -> Any:
    """An answer as one value: a JSON model as it is, a stream's or raw answer's bytes."""
    if isinstance(answer, Stream):
        frames: list[bytes] = []

        async def write(data: bytes) -> None:
            frames.append(data)

        try:
            frames.append(await answer.run(write))
        finally:
            await answer.close()
        return b"".join(frames)
    if isinstance(answer, Raw):
        return b"".join([chunk async for chunk in answer.chunks])
    return answer
