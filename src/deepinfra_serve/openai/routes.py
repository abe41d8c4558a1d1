"""Handlers of the OpenAI-compatible API's routes (the route table, `http.routes`, serves them
under /v1/openai and /v1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from ..config.adapters import CardAdapter
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


def model_out(card: ModelCard, created: int, adapter: CardAdapter | None = None) -> ModelOut:
    """A card's model, or one of its LoRA adapters (`parent`: the card's model)."""
    pricing = card.pricing if adapter is None else card.pricing.scaled(adapter.price_multiplier)
    name = card.name if adapter is None else adapter.name
    return ModelOut(
        id=name,
        created=created,
        owned_by=card.owned_by if adapter is None else name.split("/")[0],
        root=name,
        parent=None if adapter is None else card.name,
        tags=card.listed_tags,
        metadata=ModelMetadata(
            description=card.description
            if adapter is None
            else adapter.description or f"A LoRA adapter of {card.name}.",
            context_length=card.engine.max_model_len,
            max_tokens=card.max_output_tokens,
            pricing=ModelPricing(
                input_tokens=pricing.input_usd_per_mtok,
                output_tokens=pricing.output_usd_per_mtok,
                cache_read_tokens=pricing.cache_read_usd_per_mtok,
            ),
            tags=card.listed_tags,
        ),
    )


def _listed(catalog: Catalog) -> list[ModelOut]:
    """Each listed card's model, then its LoRA adapters."""
    out: list[ModelOut] = []
    for card in catalog.listed:
        out.append(model_out(card, catalog.created))
        for adapter in [] if card.lora is None else card.lora.adapters:
            out.append(model_out(card, catalog.created, adapter))
    return out


async def list_models(call: Call[Catalog, None]) -> ModelList:
    return ModelList(data=_listed(call.services))


async def get_model(call: Call[Catalog, None]) -> ModelOut:
    # Only what the list shows can be retrieved.
    model = call.params["model"]
    for listed in _listed(call.services):
        if listed.id == model:
            return listed
    raise not_found(model)
