"""DeepInfra's model information routes, answered from the cards of the server (and of its
fleet): `GET /models/{model_name}` (`ModelInfoOut`) and `GET /models/list` (its `ModelOut`
items). Clients such as llama-index's DeepInfra integration read a model's `tags` here.

Fields the cards cannot fill are null where DeepInfra's schema allows it (`mf_description`,
`mask_token`, `in_schema`, `out_schema`, `in_fields`, `doc_blocks`, `short_doc_block`,
`replaced_by`, `deprecated`, `mmlu`, `expected`, `import_time`, `mf_name`, `mf_title`), and
empty where it requires a value (`cmdline_inv`, `txt_docs`, `out_example`, `out_docs`,
`schemas`, `meta`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, RootModel

from ..config.adapters import CardAdapter
from ..config.cards import ModelCard
from ..config.catalog import Catalog
from ..config.models import ResponseModel
from ..config.pricing import Pricing
from ..engine.call import Call
from ..engine.errors import not_found
from ..lora.routes import LoraServices, added_adapters

TEXT_GENERATION = "text-generation"
LORA = "lora"  # a LoRA adapter's `type` and tag


class TokenPricing(ResponseModel):
    """DeepInfra's ModelPricingTokens: US cents per token."""

    type: Literal["tokens"] = "tokens"
    cents_per_input_token: float
    cents_per_output_token: float
    rate_per_input_token_cached: float | None = None
    rate_per_input_token_cache_write: float | None = None
    short: str | None = None
    full: str | None = None
    table: dict[str, Any] | None = None


class _Model(ResponseModel):
    """What DeepInfra's ModelOut and ModelInfoOut share."""

    model_name: str
    type: str = TEXT_GENERATION
    reported_type: str = TEXT_GENERATION
    description: str
    tags: list[str]
    pricing: TokenPricing
    max_tokens: int | None
    replaced_by: str | None = None
    deprecated: int | None = None
    quantization: str | None
    mmlu: float | None = None
    expected: str | None = None
    is_partner: bool = False


class ModelSummary(_Model):
    """DeepInfra's ModelOut, an item of /models/list."""

    cover_img_url: str = ""
    private: int = 0


class ModelList(RootModel[list[ModelSummary]]):
    """DeepInfra's /models/list: a JSON array."""


class ModelInfo(_Model):
    """DeepInfra's ModelInfoOut."""

    version: str
    mf_description: str | None = None
    featured: bool = False
    owner: bool = False
    public: bool = True
    curl_inv: str
    cmdline_inv: str = ""
    txt_docs: str = ""
    out_example: str = ""
    out_docs: str = ""
    mask_token: str | None = None
    in_schema: Any = None
    out_schema: Any = None
    in_fields: list[Any] | None = None
    doc_blocks: list[Any] | None = None
    short_doc_block: Any = None
    schemas: list[Any] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)
    max_output_tokens: int | None
    import_time: str | None = None
    is_custom_deployable: bool = False
    mf_name: str | None = None
    mf_title: str | None = None


def _pricing(p: Pricing) -> TokenPricing:
    cents = 100 / 1_000_000  # USD per million tokens -> cents per token
    return TokenPricing(
        cents_per_input_token=p.input_usd_per_mtok * cents,
        cents_per_output_token=p.output_usd_per_mtok * cents,
        rate_per_input_token_cached=(
            None if p.cache_read_usd_per_mtok is None else p.cache_read_usd_per_mtok * cents
        ),
    )


def _summary(card: ModelCard, adapter: CardAdapter | None = None) -> dict[str, Any]:
    if adapter is None:
        return {
            "model_name": card.name,
            "description": card.description,
            "tags": card.listed_tags,
            "pricing": _pricing(card.pricing),
            "max_tokens": card.engine.max_model_len,
            "quantization": card.engine.quantization,
        }
    return {
        "model_name": adapter.name,
        "type": LORA,
        "description": adapter.description or f"A LoRA adapter of {card.name}.",
        "tags": [*card.listed_tags, LORA],
        "pricing": _pricing(card.pricing.scaled(adapter.price_multiplier)),
        "max_tokens": card.engine.max_model_len,
        "quantization": card.engine.quantization,
    }


def _adapters(card: ModelCard) -> list[CardAdapter]:
    return [] if card.lora is None else card.lora.adapters


def _curl(card: ModelCard, name: str) -> str:
    if "openai" in card.apis:
        return (
            'curl "$BASE_URL/v1/openai/chat/completions" -H "Content-Type: application/json" '
            '-H "Authorization: Bearer $DEEPINFRA_TOKEN" -d \'{"model": "'
            + name
            + '", "messages": [{"role": "user", "content": "Hello!"}]}\''
        )
    return (
        f'curl "$BASE_URL/v1/inference/{name}" -H "Content-Type: application/json" '
        '-H "Authorization: Bearer $DEEPINFRA_TOKEN" -d \'{"input": "Hello!"}\''
    )


async def models_list(call: Call[Catalog, None]) -> ModelList:
    return ModelList(
        [
            ModelSummary(**_summary(card, adapter))
            for card in call.services.cards
            for adapter in (None, *_adapters(card))
        ]
    )


async def lora_list(call: Call[LoraServices, None]) -> ModelList:
    """The LoRA adapters that can be called here: the cards' and the caller's own."""
    services = call.services
    card = services.card
    listed = [ModelSummary(**_summary(card, adapter)) for adapter in _adapters(card)]
    owner = "" if call.tenant is None else call.tenant.owner
    for row in await added_adapters(services, owner):
        served = services.adapters.served(row)
        listed.append(
            ModelSummary(
                model_name=row.name,
                type=LORA,
                description=f"A LoRA adapter of {card.name}, from {row.source}.",
                tags=[*card.listed_tags, LORA],
                pricing=_pricing(served.pricing),
                max_tokens=card.engine.max_model_len,
                quantization=card.engine.quantization,
                private=1,
            )
        )
    return ModelList(listed)


async def model_info(call: Call[Catalog, None]) -> ModelInfo:
    model = call.params["model"]
    name, _sep, version = model.partition(":")
    for card in call.services.cards:
        for adapter in (None, *_adapters(card)):
            served_name = card.name if adapter is None else adapter.name
            served_version = card.served_version if adapter is None else adapter.served_version
            if served_name == name and (not version or version == served_version):
                return ModelInfo(
                    **_summary(card, adapter),
                    version=served_version or "",
                    curl_inv=_curl(card, served_name),
                    max_output_tokens=card.max_output_tokens,
                )
    raise not_found(model)
