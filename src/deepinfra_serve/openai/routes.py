"""Handlers of the OpenAI-compatible API's routes (the route table, `http.routes`, serves them
under /v1/openai and /v1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from ..config.cards import ModelCard
from ..config.catalog import Catalog
from ..config.settings import ServerSettings
from ..engine.call import Call
from ..engine.errors import not_found
from ..engine.generation import Answer
from ..engine.lifecycle import Lifecycle
from ..engine.served_model import ServedModel
from ..store.database import Store
from .chat import ChatService
from .completions import CompletionService
from .responses import ModelList, ModelMetadata, ModelOut, ModelPricing
from .schema import ChatCompletionRequest, CompletionRequest


@dataclass(frozen=True)
class OpenAIServices:
    chat: ChatService
    completions: CompletionService

    @classmethod
    def start(
        cls,
        model: ServedModel,
        lifecycle: Lifecycle,
        settings: ServerSettings,
        store: Store | None = None,
    ) -> Self:
        return cls(ChatService(model), CompletionService(model))

    async def aclose(self) -> None:
        """Nothing outlives a request here."""


async def chat_completions(call: Call[OpenAIServices, ChatCompletionRequest]) -> Answer:
    return await call.services.chat.create(call.body, call.record)


async def completions(call: Call[OpenAIServices, CompletionRequest]) -> Answer:
    return await call.services.completions.create(call.body, call.record)


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


async def list_models(call: Call[Catalog, None]) -> ModelList:
    catalog = call.services
    return ModelList(data=[model_out(card, catalog.created) for card in catalog.listed])


async def get_model(call: Call[Catalog, None]) -> ModelOut:
    # Only what the list shows can be retrieved.
    model, catalog = call.params["model"], call.services
    for card in catalog.listed:
        if card.name == model:
            return model_out(card, catalog.created)
    raise not_found(model)
