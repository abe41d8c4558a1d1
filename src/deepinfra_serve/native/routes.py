"""Route of the native API: POST /v1/inference/{owner}/{name}."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..apis import NATIVE_MOUNT
from ..auth import require_api_key
from ..errors import NativeError, error_responses, model_loading
from ..model_routing import check_served
from ..request_lifetime import serve_request
from ..sse import EventStream
from .schema import InferenceRequest, InferenceResponse
from .service import InferenceService


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        NATIVE_MOUNT + "/{model:path}",
        response_model=InferenceResponse,
        response_model_exclude_none=True,
        responses={200: {"content": {"text/event-stream": {}}}, **error_responses(NativeError)},
        dependencies=[Depends(require_api_key)],
    )
    async def inference(
        model: str, body: InferenceRequest, request: Request
    ) -> InferenceResponse | EventStream | Response:
        check_served(request.app.state.card, model, "native")
        service: InferenceService | None = request.app.state.native
        if service is None:
            raise model_loading()
        return await serve_request(
            request, service.create(body), request.app.state.request_timeout_s
        )

    return router
