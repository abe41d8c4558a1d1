"""Route of the native API: POST /v1/inference/{owner}/{name}."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.datastructures import State

from ..engine.errors import NativeError, error_responses, model_loading
from ..http.lifetime import Answer
from ..http.model_routing import check_served
from ..http.routes import NATIVE_MOUNT
from .schema import InferenceRequest, InferenceResponse
from .service import InferenceService


async def inference(state: State, body: InferenceRequest, model: str) -> Answer:
    check_served(state.card, model, "native")
    service: InferenceService | None = state.native
    if service is None:
        raise model_loading()
    return await service.create(body)


def documented_routes() -> APIRouter:
    """The route as the OpenAPI document shows it; `endpoints` serves it, ahead of FastAPI."""
    router = APIRouter()

    @router.post(
        NATIVE_MOUNT + "/{model:path}",
        response_model=InferenceResponse,
        response_model_exclude_none=True,
        responses={200: {"content": {"text/event-stream": {}}}, **error_responses(NativeError)},
    )
    def inference(model: str, body: InferenceRequest) -> None:
        """Generate from raw input; with `stream`, one TGI-style event per token."""

    return router
