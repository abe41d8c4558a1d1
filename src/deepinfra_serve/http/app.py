"""The FastAPI application: an app factory that tests and the CLI both call.

The HTTP server answers from the first moment: the engine is built in a worker thread while
the probes tell an orchestrator "alive, not ready yet" (a 70B model takes minutes to load).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from .. import __version__
from ..batch.services import BatchServices
from ..config.cards import ModelCard, load_cards
from ..config.catalog import Catalog
from ..config.settings import ServerSettings
from ..engine.core_process import in_lasting_thread
from ..engine.lifecycle import Lifecycle, Phase, SharedState
from ..engine.served_model import ServedModel
from ..engine.watchdog import watch_engine
from ..engine.weights import model_path
from ..lora.registry import Adapters
from ..lora.routes import LoraServices, base_config
from ..observability.ledger import Ledger
from ..observability.metrics import exposition, publish_prices
from ..observability.tracing import start_tracing
from ..store import usage
from ..store.database import Store
from ..usage.routes import UsageServices
from .admission import AdmissionMiddleware
from .auth import ApiKeys
from .batch_input import endpoint_routes, line_check, native_route
from .batch_work import BatchWork
from .capacity import Capacity
from .dispatch import Dispatch
from .errors import install_error_handlers
from .families import FAMILIES
from .middleware import ObservabilityMiddleware
from .openapi import document
from .runner import Runner

log = logging.getLogger(__name__)

LEDGER_CLOSE_S = 10  # how long a shutdown waits for the store to take the ledger's last entries


def fleet_cards(card: ModelCard, spec: str) -> list[ModelCard]:
    """This card and, behind a fleet's front door, every other card of the fleet, so that one
    base URL shows the whole fleet whichever replica answers (/v1/openai/models lists those
    with the OpenAI API, /models/list all)."""
    cards = {c.name: c for c in load_cards(spec)}  # in the fleet's order, on every replica
    if card.name not in cards:
        cards = {card.name: card, **cards}
    return list(cards.values())


def create_app(
    card: ModelCard,
    start_model: Callable[[], ServedModel],
    settings: ServerSettings | None = None,
    on_fatal: Callable[[], None] = lambda: None,
    shared: SharedState | None = None,
) -> FastAPI:
    """`start_model` prepares the weights and builds the engine; it runs in a worker thread.

    `on_fatal` is called when the engine cannot start, dies or hangs, so that the process can
    exit non-zero and be restarted. `shared` is given to each of several API processes.
    """
    settings = settings or ServerSettings()
    lifecycle = Lifecycle(card.name, shared)
    publish_prices(card.name, card.pricing)
    api_keys = ApiKeys.load(settings.api_keys, settings.api_keys_file, settings.key_rate_limit)
    capacity = Capacity(
        card.tier_policy(settings.max_concurrent_requests),
        lifecycle,
        len(api_keys),
        card.name,
        None if shared is None else shared.counts,
    )
    if api_keys.required:
        log.info("API keys required (%d configured)", len(api_keys))
    else:
        log.warning("no API key configured: the API is open to anyone who can reach it")

    async def start(app: FastAPI) -> None:
        t0 = time.monotonic()
        try:
            # The engine's processes die with the thread that starts them (core_process).
            model = await in_lasting_thread(start_model)
        except Exception:
            log.exception("the engine for %s failed to start", card.name)
            lifecycle.fail()
            on_fatal()
            return
        if not lifecycle.loading:  # shut down while loading
            model.shutdown()
            return
        app.state.model = model
        # Each API's services over the engine (the route table's families).
        app.state.apis = {
            name: family.start(model, lifecycle, settings, app.state.store)
            for name, family in FAMILIES.items()
            if family.start is not None
        }
        # What start-up built (modules, the engine client, the tokenizer) lives as long as
        # the process: frozen, the collector stops walking it on every oldest-generation pass,
        # a pause that grows with the heap (vLLM's server does the same).
        from ..engine.vllm_seam import freeze_gc_heap

        freeze_gc_heap()
        lora.model = model
        if card.lora is not None:
            lora.base_config = await asyncio.to_thread(
                base_config, model_path(card, settings.cache_dir)
            )
        lifecycle.ready(model)
        app.state.watchdog = asyncio.create_task(
            watch_engine(model, lifecycle, settings.engine_stall_timeout_s, on_fatal)
        )
        if app.state.store is not None:
            work = BatchWork(
                runner=app.state.runner,
                store=app.state.store,
                card=card,
                settings=settings,
                lifecycle=lifecycle,
                capacity=capacity,
                api_keys=api_keys,
                routes=endpoint_routes(),
                native=native_route(),
                services=lambda name: app.state.apis.get(name),
            )
            app.state.batch_work = asyncio.create_task(work.run())
        log.info("engine for %s ready in %.1f s", card.name, time.monotonic() - t0)

    async def open_store(app: FastAPI) -> None:
        try:
            store = await asyncio.to_thread(Store.open, settings.store_url, settings.data_dir)
        except Exception:
            log.exception("the store could not be opened")
            lifecycle.fail()
            on_fatal()
            return
        app.state.store = store
        app.state.store_services = {
            "openai": BatchServices(store, settings, line_check(catalog, app.state.adapters)),
            "account": UsageServices(store, ledger is not None),
        }
        app.state.adapters.store = store
        if ledger is not None:
            app.state.ledger_writer = asyncio.create_task(
                ledger.run(lambda entries: store.call(usage.write, store, entries))
            )
            app.state.ledger_purge = asyncio.create_task(
                purge_usage(store, settings.usage_retention_days)
            )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await open_store(app)
        starting = asyncio.create_task(start(app))
        try:
            yield
        finally:
            lifecycle.drain()
            if app.state.watchdog is not None:
                app.state.watchdog.cancel()
            if app.state.batch_work is not None:
                # It sees the drain within a tick and hands its lines back.
                await asyncio.wait([app.state.batch_work], timeout=5)
                app.state.batch_work.cancel()
            apis, app.state.apis = app.state.apis, {}
            if not starting.done():
                log.warning("shutting down while the engine is still loading")
            for services in apis.values():
                await services.aclose()  # the native API's webhook jobs end here
            if app.state.model is not None:
                lora.model = None
                app.state.model.shutdown()
            if app.state.ledger_writer is not None:
                assert ledger is not None
                app.state.ledger_purge.cancel()
                # Every request has ended: what they billed is written before the store closes.
                await ledger.close(app.state.ledger_writer, LEDGER_CLOSE_S)
            if app.state.store is not None:
                app.state.store_services = {}
                app.state.adapters.store = None
                app.state.store.close()
            if tracing is not None:
                tracing.shutdown()  # the spans still queued are exported
            gc.unfreeze()  # what start-up built may now be collected at exit

    app = FastAPI(
        title="deepinfra-serve",
        version=__version__,
        summary="DeepInfra's public API on vLLM's async engine.",
        lifespan=lifespan,
    )
    app.state.card = card
    app.state.api_keys = api_keys
    app.state.shared_prompt_cache = settings.share_prompt_cache
    app.state.lifecycle = lifecycle
    app.state.capacity = capacity
    app.state.flex_max_wait_s = settings.flex_max_wait_s
    app.state.watchdog = None
    app.state.request_timeout_s = settings.request_timeout_s
    app.state.model = None
    app.state.apis = {}
    app.state.read_timeout_s = settings.read_timeout_s
    app.state.store = None  # files, batches, webhook jobs: opened as the server starts
    # The services of the routes on the store, by API family: the Batch API's, the usage routes'.
    app.state.store_services = {}
    # Every billed request's entry, written to the store by a task of its own.
    ledger = Ledger(card.name, settings.usage_queue_max) if settings.usage_ledger else None
    app.state.ledger_writer = app.state.ledger_purge = None
    app.state.batch_work = None
    # The LoRA adapters served by name: the card's, and those added at run time (the store's).
    app.state.adapters = Adapters(card, settings.cache_dir, settings.data_dir)
    lora = app.state.lora_services = LoraServices(app.state.adapters, settings)
    # What the routes that run no engine work answer from, and what runs every route's calls.
    catalog = Catalog(
        fleet_cards(card, settings.fleet_cards), int(time.time()), capacity.policy.limit
    )
    # Spans, when OpenTelemetry's settings ask for them; set before the engine starts, whose
    # spans go through the same provider.
    tracing = start_tracing(os.environ, card.name, str(settings.port), __version__)
    app.state.runner = Runner(app.state, catalog, ledger, tracing)
    install_error_handlers(app)
    app.openapi = lambda: document(app)  # type: ignore[method-assign]  # FastAPI's way to replace it

    @app.get("/health/live", tags=["operations"])
    async def live() -> Any:
        """200 while the process serves HTTP (loading too); 503 once the engine is dead or
        hung, so that the orchestrator restarts the pod even if the exit is slow."""
        if lifecycle.dead:
            return JSONResponse({"status": "dead"}, status_code=503)
        return {"status": "alive"}

    @app.get("/health/ready", tags=["operations"])
    async def ready() -> Any:
        """200 only when new requests can be served: 503 while loading, draining or dead."""
        phase = lifecycle.phase
        return JSONResponse({"status": phase}, status_code=200 if phase is Phase.READY else 503)

    @app.get("/health", tags=["operations"])
    async def health() -> Any:
        """Whether the engine is up: 503 while loading or once it has died."""
        phase = lifecycle.phase
        ok = phase in (Phase.READY, Phase.DRAINING)
        body = {"status": "ok" if ok else phase, "model": card.name}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        body, media_type = exposition()
        return Response(body, media_type=media_type)

    # Outermost first: every request is counted and logged, even one admission refuses; the
    # route table's routes are answered ahead of FastAPI's own stack, which serves the rest.
    app.middleware_stack = ObservabilityMiddleware(
        AdmissionMiddleware(
            Dispatch(app.state.runner, app.build_middleware_stack()),
            lifecycle=lifecycle,
            max_body_bytes=settings.max_body_bytes,
            max_pending_body_bytes=settings.max_pending_body_bytes,
            read_timeout_s=settings.read_timeout_s,
            model=card.name,
        ),
        model=card.name,
        log_content=settings.log_content,
        ledger=ledger,
        tracing=tracing,
    )
    return app


async def purge_usage(store: Store, retention_days: float) -> None:
    """Delete the ledger's request rows past their retention, at start and hourly after (every
    replica does; a delete finds nothing left to do)."""
    while True:
        try:
            gone = await store.call(usage.purge, store, retention_days)
            if gone:
                log.info("usage ledger: %d request rows past %g days deleted", gone, retention_days)
        except Exception as exc:  # the store down, or a failed delete: tried again in an hour
            log.warning("usage ledger: the purge of old request rows failed: %s", exc)
        await asyncio.sleep(3600)
