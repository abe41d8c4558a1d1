"""Handler of the native API's route, POST /v1/inference/{owner}/{name} (the route table,
`http.routes`, serves it)."""

from __future__ import annotations

from starlette.datastructures import State

from ..engine.errors import model_loading
from ..engine.generation import Answer
from .schema import InferenceRequest
from .service import InferenceService


async def inference(state: State, body: InferenceRequest, _: str, __: object) -> Answer:
    service: InferenceService | None = state.apis.get("native")
    if service is None:
        raise model_loading()
    return await service.create(body)
