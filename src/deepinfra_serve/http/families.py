"""The API families: what the routes of one API share (where it is mounted, its error shape,
its services over the engine), and what a model a request names is served as through one.

The route table (`routes`) declares each route with its family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from ..anthropic import errors as anthropic_errors
from ..anthropic.messages import MessagesService
from ..config.cards import Api, ModelCard
from ..config.served import Served, ServedAdapter
from ..config.settings import ServerSettings
from ..engine.errors import APIError, not_found
from ..engine.lifecycle import Lifecycle
from ..engine.served_model import ServedModel
from ..native import errors as native_errors
from ..native.service import InferenceService
from ..openai import errors as openai_errors
from ..openai import routes as openai
from ..store.database import Store


class ApiServices(Protocol):
    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class ApiFamily:
    """What the routes of one API share."""

    name: Api | Literal["account", "models", "lora"]  # an API's as cards list it in `apis`
    mounts: tuple[str, ...]  # where its routes are served; the first is documented
    where: str  # where a model is reached through it, for messages ({model}: its name)
    error_model: type[BaseModel]  # its error body, for the OpenAPI document
    error_body: Callable[[APIError], dict[str, Any]]
    stream_error: Callable[[APIError], bytes]  # an error after a stream's headers went out
    exclude_none: bool  # its JSON answers leave out fields that are null
    # Its services over the engine, made once the engine is ready (`app.state.apis[name]`);
    # their `aclose()` runs at shutdown, after the drain. None: it needs none.
    start: Callable[[ServedModel, Lifecycle, ServerSettings, Store | None], ApiServices] | None


OPENAI = ApiFamily(
    name="openai",
    # DeepInfra serves the OpenAI API without the /openai segment too.
    mounts=("/v1/openai", "/v1"),
    where="/v1/openai",
    error_model=openai_errors.OpenAIError,
    error_body=openai_errors.error_body,
    stream_error=openai_errors.stream_error,
    exclude_none=False,
    start=openai.OpenAIServices.start,
)
NATIVE = ApiFamily(
    name="native",
    mounts=("/v1/inference",),
    where="/v1/inference/{model}",
    error_model=native_errors.NativeError,
    error_body=native_errors.error_body,
    stream_error=native_errors.stream_error,
    exclude_none=True,
    start=InferenceService.start,
)
ANTHROPIC = ApiFamily(
    name="anthropic",
    mounts=("/anthropic/v1",),
    where="/anthropic/v1/messages",
    error_model=anthropic_errors.AnthropicError,
    error_body=anthropic_errors.error_body,
    stream_error=anthropic_errors.stream_error,
    exclude_none=False,
    start=MessagesService.start,
)
# DeepInfra's account routes, as far as one server knows them (its keys configuration); its
# errors in DeepInfra's own shape.
ACCOUNT = ApiFamily(
    name="account",
    mounts=("/v1",),
    where="/v1",
    error_model=native_errors.NativeError,
    error_body=native_errors.error_body,
    stream_error=native_errors.stream_error,
    exclude_none=True,
    start=None,
)
# DeepInfra's model information routes, from the cards of the server's fleet.
MODELS = ApiFamily(
    name="models",
    mounts=("/models",),
    where="/models",
    error_model=native_errors.NativeError,
    error_body=native_errors.error_body,
    stream_error=native_errors.stream_error,
    exclude_none=False,
    start=None,
)
# DeepInfra's LoRA adapter routes (`/lora-model`), in its own error shape.
LORA = ApiFamily(
    name="lora",
    mounts=("",),
    where="/lora-model",
    error_model=native_errors.NativeError,
    error_body=native_errors.error_body,
    stream_error=native_errors.stream_error,
    exclude_none=True,
    start=None,
)
FAMILIES = {family.name: family for family in (OPENAI, NATIVE, ANTHROPIC, ACCOUNT, MODELS, LORA)}
# The error shape of a path no route serves.
DEFAULT_FAMILY = OPENAI


def served_as(
    card: ModelCard, model: str, family: ApiFamily, adapter: ServedAdapter | None = None
) -> Served:
    """What `model` (`Owner/Name`, or `Owner/Name:VERSION`) is served as here: the card's model,
    or `adapter` (one of its LoRA adapters, found by that name); 404 for a model this server
    does not serve (or at another version than it serves); 400 for an API its card does not
    offer."""
    name, versioned, version = model.partition(":")
    if adapter is not None and adapter.name == name:
        served_version = adapter.version
    elif name == card.name:
        served_version = card.served_version
    else:
        raise not_found(model)
    if versioned and version != served_version:
        raise APIError(
            404,
            f"The model `{model}` does not exist: `{name}` is served at version `{served_version}`"
            if served_version
            else f"The model `{model}` does not exist: `{name}` has no versions",
            param="model",
            code="model_not_found",
        )
    if family.name not in card.apis:
        where = " and ".join(FAMILIES[a].where.format(model=name) for a in card.apis)
        raise APIError(
            400,
            f"The model `{model}` is served through {where} only",
            param="model",
            code="api_not_supported",
        )
    if adapter is not None:
        return Served(name, version if versioned else None, card, adapter.pricing, adapter)
    return Served(card.name, version if versioned else None, card, card.pricing)
