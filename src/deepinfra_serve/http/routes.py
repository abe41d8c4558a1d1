"""The route table: every API route, declared once.

Which route a path is (`classify`, decided once per request by the outermost middleware), how
it is served (`dispatch`), whether it passes admission, which headers carry its API key, its
metrics label, its error shape and its entry in the OpenAPI document (`openapi`) are all read
from the entries below. An API is a package (schema, formatter, handlers) plus a family
(`families`) and its routes here (the store's in `store_routes`; what a route is and how one
is found, `route_table`); nothing else names its paths.
"""

from __future__ import annotations

from typing import TypedDict

from ..anthropic import routes as anthropic
from ..anthropic.schema import MessageOut, MessagesRequest, TokenCount, TokenCountRequest
from ..lora import routes as lora
from ..lora.schema import DeploymentOut, LoraModelUploadIn
from ..native import routes as native
from ..native.schema import InferenceRequest, InferenceResponse
from ..openai import routes as openai
from ..openai.responses import ChatCompletion, Completion, ModelList, ModelOut
from ..openai.schema import ChatCompletionRequest, CompletionRequest
from . import model_info
from .families import ANTHROPIC, LORA, MODELS, NATIVE, OPENAI
from .route_table import Route, RouteTable
from .store_routes import STORE_ROUTES

# Every status a generation route can answer besides 200, for the OpenAPI document.
GENERATION_ERRORS = (400, 401, 404, 413, 415, 422, 429, 503, 504)


class _Generation(TypedDict):
    """What every generation route declares alike."""

    admitted: bool
    auth: tuple[str, ...]
    errors: tuple[int, ...]


_GENERATION = _Generation(admitted=True, auth=("authorization",), errors=GENERATION_ERRORS)
# Anthropic's clients send the key as x-api-key.
_ANTHROPIC = _Generation(
    admitted=True, auth=("x-api-key", "authorization"), errors=GENERATION_ERRORS
)

ROUTES = (
    Route(
        OPENAI,
        "POST",
        "/chat/completions",
        openai.chat_completions,
        ChatCompletion,
        "A chat completion; with `stream`, SSE chunks ending in `data: [DONE]`.",
        body=ChatCompletionRequest,
        label="chat",
        model_in="body",
        streams=True,
        tiered=True,
        **_GENERATION,
    ),
    Route(
        OPENAI,
        "POST",
        "/completions",
        openai.completions,
        Completion,
        "A text completion; with `stream`, SSE chunks ending in `data: [DONE]`.",
        body=CompletionRequest,
        label="completions",
        model_in="body",
        streams=True,
        tiered=True,
        **_GENERATION,
    ),
    Route(
        OPENAI,
        "GET",
        "/models",
        openai.list_models,
        ModelList,
        "The models behind this base URL, with DeepInfra's metadata.",
    ),
    Route(
        OPENAI,
        "GET",
        "/models/{model:path}",
        openai.get_model,
        ModelOut,
        "One model of the list.",
        errors=(404,),
    ),
    Route(
        NATIVE,
        "POST",
        "/{model:path}",
        native.inference,
        InferenceResponse,
        "Generate from raw input; with `stream`, one TGI-style event per token.",
        body=InferenceRequest,
        label="inference",
        model_in="path",
        streams=True,
        **_GENERATION,
    ),
    Route(
        ANTHROPIC,
        "POST",
        "/messages",
        anthropic.messages,
        MessageOut,
        "Anthropic's Messages API; with `stream`, its named server-sent events.",
        body=MessagesRequest,
        label="messages",
        model_in="body",
        streams=True,
        **_ANTHROPIC,
    ),
    Route(
        ANTHROPIC,
        "POST",
        "/messages/count_tokens",
        anthropic.count_tokens,
        TokenCount,
        "The prompt tokens a Messages request would send to the model.",
        body=TokenCountRequest,
        label="count_tokens",
        model_in="body",
        holds_place=False,
        **_ANTHROPIC,
    ),
    Route(
        MODELS,
        "GET",
        "/lora/list",
        model_info.lora_list,
        model_info.ModelList,
        "The LoRA adapters that can be called here: the cards' and the caller's own.",
        label="lora",
        lora=True,
        auth=("authorization",),
        errors=(401, 503),
    ),
    Route(
        LORA,
        "POST",
        "/lora-model",
        lora.add_lora_model,
        DeploymentOut,
        "Add a LoRA adapter of the served model under a model name of its own, for the "
        "calling key (`hf_model_name`: a hub repository, or a folder the operator allows).",
        body=LoraModelUploadIn,
        label="lora",
        lora=True,
        admitted=True,
        holds_place=False,
        auth=("authorization",),
        errors=(400, 401, 404, 409, 422, 429, 503),
    ),
    Route(
        LORA,
        "DELETE",
        "/lora-model/{lora_model_name:path}",
        lora.delete_lora_model,
        DeploymentOut,
        "Remove one of the calling key's LoRA adapters.",
        label="lora",
        lora=True,
        auth=("authorization",),
        errors=(401, 404, 503),
    ),
    Route(
        MODELS,
        "GET",
        "/list",
        model_info.models_list,
        model_info.ModelList,
        "Every model behind this base URL, in DeepInfra's shape.",
    ),
    Route(
        MODELS,
        "GET",
        "/{model:path}",
        model_info.model_info,
        model_info.ModelInfo,
        "One model (`Owner/Name`, or `Owner/Name:VERSION`), in DeepInfra's shape, with its "
        "`tags` (`tools`: it calls functions).",
        errors=(404,),
    ),
    *STORE_ROUTES,
)


TABLE = RouteTable(ROUTES)
