"""Handlers of the OpenAI-compatible API's routes (the route table, `http.routes`, serves them
under /v1/openai and /v1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from starlette.datastructures import State

from ..config.cards import ModelCard
from ..config.settings import ServerSettings
from ..engine.errors import model_loading, not_found
from ..engine.generation import Answer
from ..engine.lifecycle import Lifecycle
from ..engine.served_model import ServedModel
from .chat import ChatService
from .completions import CompletionService
from .responses import ModelList, ModelMetadata, ModelOut, ModelPricing
from .schema import ChatCompletionRequest, CompletionRequest


@dataclass(frozen=True)
class OpenAIServices:
    chat: ChatService
    completions: CompletionService

    @classmethod
    def start(cls, model: ServedModel, lifecycle: Lifecycle, settings: ServerSettings) -> Self:
        return cls(ChatService(model), CompletionService(model))

    async def aclose(self) -> None:
        """Nothing outlives a request here."""


def _services(state: State) -> OpenAIServices:
    services: OpenAIServices | None = state.apis.get("openai")
    if services is None:
        raise model_loading()
    return services


async def chat_completions(state: State, body: ChatCompletionRequest, _: str, __: object) -> Answer:
    return await _services(state).chat.create(body)


async def completions(state: State, body: CompletionRequest, _: str, __: object) -> Answer:
    return await _services(state).completions.create(body)


def model_out(card: ModelCard, created: int) -> ModelOut:
    return ModelOut(
        id=card.name,
        created=created,
        owned_by=card.owned_by,
        root=card.name,
        tags=card.listed_tags,
        metadata=ModelMetadata(
            description=card.description,
            context_length=card.engine.max_model_len,
            max_tokens=card.max_output_tokens,
            pricing=ModelPricing(
                input_tokens=card.pricing.input_usd_per_mtok,
                output_tokens=card.pricing.output_usd_per_mtok,
                cache_read_tokens=card.pricing.cache_read_usd_per_mtok,
            ),
            tags=card.listed_tags,
        ),
    )


async def list_models(state: State, _: None, __: str, ___: object) -> ModelList:
    return ModelList(data=[model_out(card, state.created) for card in state.listed])


async def get_model(state: State, _: None, model: str, __: object) -> ModelOut:
    # Only what the list shows can be retrieved.
    for card in state.listed:
        if card.name == model:
            return model_out(card, state.created)
    raise not_found(model)
