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

from ..config.cards import ModelCard
from ..config.catalog import Catalog
from ..config.models import ResponseModel
from ..engine.call import Call
from ..engine.errors import not_found

TEXT_GENERATION = "text-generation"


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


def _pricing(card: ModelCard) -> TokenPricing:
    p = card.pricing
    cents = 100 / 1_000_000  # USD per million tokens -> cents per token
    return TokenPricing(
        cents_per_input_token=p.input_usd_per_mtok * cents,
        cents_per_output_token=p.output_usd_per_mtok * cents,
        rate_per_input_token_cached=(
            None if p.cache_read_usd_per_mtok is None else p.cache_read_usd_per_mtok * cents
        ),
    )


def _summary(card: ModelCard) -> dict[str, Any]:
    return {
        "model_name": card.name,
        "description": card.description,
        "tags": card.listed_tags,
        "pricing": _pricing(card),
        "max_tokens": card.engine.max_model_len,
        "quantization": card.engine.quantization,
    }


def _curl(card: ModelCard) -> str:
    if "openai" in card.apis:
        return (
            'curl "$BASE_URL/v1/openai/chat/completions" -H "Content-Type: application/json" '
            '-H "Authorization: Bearer $DEEPINFRA_TOKEN" -d \'{"model": "'
            + card.name
            + '", "messages": [{"role": "user", "content": "Hello!"}]}\''
        )
    return (
        f'curl "$BASE_URL/v1/inference/{card.name}" -H "Content-Type: application/json" '
        '-H "Authorization: Bearer $DEEPINFRA_TOKEN" -d \'{"input": "Hello!"}\''
    )


async def models_list(call: Call[Catalog, None]) -> ModelList:
    return ModelList([ModelSummary(**_summary(card)) for card in call.services.cards])


async def model_info(call: Call[Catalog, None]) -> ModelInfo:
    model = call.params["model"]
    name, _sep, version = model.partition(":")
    for card in call.services.cards:
        if card.name == name and (not version or version == card.served_version):
            return ModelInfo(
                **_summary(card),
                version=card.served_version or "",
                curl_inv=_curl(card),
                max_output_tokens=card.max_output_tokens,
            )
    raise not_found(model)
