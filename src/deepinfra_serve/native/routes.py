"""Handler of the native API's route, POST /v1/inference/{owner}/{name} (the route table,
`http.routes`, serves it)."""

from __future__ import annotations

from ..engine.call import Call
from ..engine.generation import Answer
from .schema import InferenceRequest
from .service import InferenceService


async def inference(call: Call[InferenceService, InferenceRequest]) -> Answer:
    return await call.services.create(call)
