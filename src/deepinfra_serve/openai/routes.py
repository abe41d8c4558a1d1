"""Routes of the OpenAI-compatible API; mounted under /v1/openai and /v1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import State

from ..config.cards import ModelCard
from ..engine.errors import OpenAIError, error_responses, model_loading
from ..engine.served_model import ServedModel
from ..http.lifetime import Answer
from ..http.model_routing import check_served, not_found
from .chat import ChatService
from .completions import CompletionService
from .schema import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelList,
    ModelMetadata,
    ModelOut,
    ModelPricing,
)


@dataclass(frozen=True)
class OpenAIServices:
    chat: ChatService
    completions: CompletionService

    @classmethod
    def over(cls, model: ServedModel) -> OpenAIServices:
        return cls(ChatService(model), CompletionService(model))


def model_out(card: ModelCard, created: int) -> ModelOut:
    return ModelOut(
        id=card.name,
        created=created,
        owned_by=card.owned_by,
        root=card.name,
        metadata=ModelMetadata(
            description=card.description,
            context_length=card.engine.max_model_len,
            max_tokens=card.max_output_tokens,
            pricing=ModelPricing(
                input_tokens=card.pricing.input_usd_per_mtok,
                output_tokens=card.pricing.output_usd_per_mtok,
            ),
            tags=card.tags,
        ),
    )


def _services(state: State, model: str) -> OpenAIServices:
    check_served(state.card, model, "openai")
    services: OpenAIServices | None = state.openai
    if services is None:
        raise model_loading()
    return services


async def chat_completions(state: State, body: ChatCompletionRequest, _: str) -> Answer:
    return await _services(state, body.model).chat.create(body)


async def completions(state: State, body: CompletionRequest, _: str) -> Answer:
    return await _services(state, body.model).completions.create(body)


_SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}},
    **error_responses(OpenAIError),
}


def documented_routes() -> APIRouter:
    """The generation routes as the OpenAPI document shows them. `endpoints` serves them,
    ahead of FastAPI; these declarations only give the document their bodies and answers."""
    router = APIRouter()

    @router.post("/chat/completions", response_model=ChatCompletion, responses=_SSE)
    def chat_completions(body: ChatCompletionRequest) -> None:
        """A chat completion; with `stream`, SSE chunks ending in `data: [DONE]`."""

    @router.post("/completions", response_model=Completion, responses=_SSE)
    def completions(body: CompletionRequest) -> None:
        """A text completion; with `stream`, SSE chunks ending in `data: [DONE]`."""

    return router


def build_router() -> APIRouter:
    """The routes FastAPI serves: the model list."""
    router = APIRouter()

    @router.get("/models", response_model=ModelList)
    async def list_models(request: Request) -> ModelList:
        created: int = request.app.state.created
        return ModelList(data=[model_out(card, created) for card in request.app.state.listed])

    @router.get(
        "/models/{model:path}",
        response_model=ModelOut,
        responses={404: {"model": OpenAIError, "description": "Unknown model"}},
    )
    async def get_model(model: str, request: Request) -> ModelOut:
        # Only what /models lists can be retrieved.
        for card in request.app.state.listed:
            if card.name == model:
                return model_out(card, request.app.state.created)
        raise not_found(model)

    return router
