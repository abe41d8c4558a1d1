"""The route table: every API route, declared once.

Which route a path is (`classify`, decided once per request by the outermost middleware), how
it is served (`dispatch`), whether it passes admission, which headers carry its API key, its
metrics label, its error shape and its entry in the OpenAPI document (`openapi`) are all read
from the entries below. An API is a package (schema, formatter, handlers) plus a family
(`families`) and its routes here; nothing else names its paths.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel
from starlette.datastructures import State

from ..anthropic import routes as anthropic
from ..anthropic.schema import MessageOut, MessagesRequest, TokenCount, TokenCountRequest
from ..engine.generation import Answer
from ..native import routes as native
from ..native.schema import InferenceRequest, InferenceResponse
from ..openai import routes as openai
from ..openai.responses import ChatCompletion, Completion, ModelList, ModelOut
from ..openai.schema import ChatCompletionRequest, CompletionRequest
from . import account, model_info
from .families import ACCOUNT, ANTHROPIC, MODELS, NATIVE, OPENAI, ApiFamily

# handle(app state, the validated body or None, what the path holds past the route's prefix,
# the caller's `auth.Tenant` or None)
Handler = Callable[[State, Any, str, Any], Awaitable[Answer]]

MODEL = "{model}"  # at the end of a route's path: the rest of the path, a model name


# Every status a generation route can answer besides 200, for the OpenAPI document.
GENERATION_ERRORS = (400, 401, 404, 413, 415, 422, 429, 503, 504)


@dataclass(frozen=True)
class Route:
    """One API route. `path` is under each of its family's mounts; ending in {model}, it
    matches every longer path and the handler gets the rest."""

    family: ApiFamily
    method: Literal["GET", "POST"]
    path: str
    handle: Handler
    response: type[BaseModel]
    description: str
    body: type[BaseModel] | None = None
    label: str | None = None  # metrics and access-log label; None: not metered
    admitted: bool = False  # through admission: draining, dead engine, concurrency, body size
    auth: tuple[str, ...] = ()  # headers that may carry the API key (when keys are set)
    model_in: Literal["body", "path"] | None = None  # where it names a model the card serves
    streams: bool = False  # `stream: true` answers with server-sent events
    tiered: bool = False  # its body's `service_tier` picks the tier (else: default)
    # An admitted route that runs no generation (a token count) takes no place in the model's
    # capacity.
    holds_place: bool = True
    errors: tuple[int, ...] = ()  # statuses besides 200, for the OpenAPI document

    @property
    def prefixed(self) -> bool:
        return self.path.endswith(MODEL)

    @cached_property
    def paths(self) -> tuple[str, ...]:
        """Where it is served: one path per mount (a prefix, for a prefixed route)."""
        return tuple(mount + self.path.removesuffix(MODEL) for mount in self.family.mounts)

    def rest(self, path: str) -> str:
        """What `path` holds past this route's prefix ("" for an exact route)."""
        if self.prefixed:
            for prefix in self.paths:
                if path.startswith(prefix):
                    return path[len(prefix) :]
        return ""


_GENERATION = {"admitted": True, "auth": ("authorization",), "errors": GENERATION_ERRORS}

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
        "/models/" + MODEL,
        openai.get_model,
        ModelOut,
        "One model of the list.",
        errors=(404,),
    ),
    Route(
        NATIVE,
        "POST",
        "/" + MODEL,
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
        **{**_GENERATION, "auth": ("x-api-key", "authorization")},
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
        **{**_GENERATION, "auth": ("x-api-key", "authorization")},
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
        "/" + MODEL,
        model_info.model_info,
        model_info.ModelInfo,
        "One model (`Owner/Name`, or `Owner/Name:VERSION`), in DeepInfra's shape, with its "
        "`tags` (`tools`: it calls functions).",
        errors=(404,),
    ),
    Route(
        ACCOUNT,
        "GET",
        "/me/rate_limit",
        account.rate_limit,
        account.RateLimitOut,
        "The caller's limits on this model: concurrent requests (`rate_limit`); "
        "`tpm_rate_limit` 0: tokens per minute are not limited.",
        auth=("authorization", "x-api-key"),
        errors=(401,),
    ),
)


class RouteTable:
    """Paths -> routes: exact paths by lookup, prefixed routes by their longest prefix."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self._exact: dict[str, Route] = {}
        prefixes: list[tuple[str, Route]] = []
        for route in routes:
            if route.body is not None and not route.admitted:
                # Admission reads a body whole (bounded) before the dispatcher validates it.
                raise ValueError(f"{route.path}: a route with a body must pass admission")
            for path in route.paths:
                if route.prefixed:
                    prefixes.append((path, route))
                else:
                    self._exact[path] = route
        self._prefixes = sorted(prefixes, key=lambda p: -len(p[0]))

    def classify(self, path: str) -> Route | None:
        """The route serving `path`; None for a path no API route serves (FastAPI's)."""
        route = self._exact.get(path)
        if route is not None:
            return route
        for prefix, route in self._prefixes:
            if path.startswith(prefix) and len(path) > len(prefix):
                return route
        return None


TABLE = RouteTable(ROUTES)
