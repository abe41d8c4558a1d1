"""Route of the native API: POST /v1/inference/{owner}/{name}."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse

from ..cards import ModelCard
from ..errors import APIError
from .schema import InferenceRequest, InferenceResponse
from .service import InferenceService


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/inference/{model:path}",
        response_model=InferenceResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def inference(
        model: str, body: InferenceRequest, request: Request
    ) -> InferenceResponse | EventSourceResponse:
        card: ModelCard = request.app.state.card
        if model != card.name:
            raise APIError(404, f"Model {model} not found", param="model", code="model_not_found")
        if "native" not in card.apis:
            raise APIError(
                400,
                f"Model {model} is served through /v1/openai only",
                param="model",
                code="api_not_supported",
            )
        service: InferenceService | None = request.app.state.native
        if service is None:
            raise APIError(503, "Model is loading, retry later", code="model_loading")
        return await service.create(body)

    return router
