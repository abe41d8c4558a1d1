"""The FastAPI application: an app factory that tests and the CLI both call."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from . import __version__
from .cards import ModelCard
from .errors import install_error_handlers
from .native.routes import build_router as build_native_router
from .native.service import InferenceService
from .native.webhooks import WebhookSender
from .openai.routes import OpenAIServices, build_router
from .served_model import ServedModel
from .settings import ServerSettings

log = logging.getLogger(__name__)


def create_app(
    card: ModelCard,
    start_model: Callable[[], ServedModel],
    settings: ServerSettings | None = None,
) -> FastAPI:
    """`start_model` builds the engine; it runs inside the server's event loop at start-up."""
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        t0 = time.monotonic()
        model = start_model()
        app.state.model = model
        app.state.openai = OpenAIServices.over(model)
        webhooks = WebhookSender(
            attempts=settings.webhook_attempts,
            timeout_s=settings.webhook_timeout_s,
            backoff_s=settings.webhook_backoff_s,
        )
        app.state.native = InferenceService(model, webhooks)
        log.info("engine for %s ready in %.1f s", card.name, time.monotonic() - t0)
        try:
            yield
        finally:
            app.state.openai = None
            app.state.native = None
            await webhooks.aclose()
            model.shutdown()

    app = FastAPI(
        title="deepinfra-serve",
        version=__version__,
        summary="DeepInfra's public API on vLLM's async engine.",
        lifespan=lifespan,
    )
    app.state.card = card
    app.state.created = int(time.time())
    app.state.model = None
    app.state.openai = None
    app.state.native = None
    install_error_handlers(app)
    router = build_router()
    app.include_router(router, prefix="/v1/openai", tags=["openai"])
    # DeepInfra serves the same API without the /openai segment.
    app.include_router(router, prefix="/v1", include_in_schema=False)
    app.include_router(build_native_router(), tags=["native"])

    @app.get("/health", tags=["operations"])
    async def health() -> Any:
        model: ServedModel | None = app.state.model
        if model is None or model.errored:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return {"status": "ok", "model": card.name}

    return app
