"""The route table: every API route, declared once.

Which route a path is (`classify`, decided once per request by the outermost middleware), how
it is served (`dispatch`), whether it passes admission, which headers carry its API key, its
metrics label, its error shape and its entry in the OpenAPI document (`openapi`) are all read
from the entries below. An API is a package (schema, formatter, handlers) plus a family
(`families`) and its routes here; nothing else names its paths.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from pydantic import BaseModel

from ..anthropic import routes as anthropic
from ..anthropic.schema import MessageOut, MessagesRequest, TokenCount, TokenCountRequest
from ..batch import file_routes
from ..batch import routes as batch
from ..batch.schema import BatchCreate, BatchList, BatchOut, FileDeleted, FileList, FileObject
from ..engine.call import Call
from ..engine.generation import Answer
from ..lora import routes as lora
from ..lora.schema import DeploymentOut, LoraModelUploadIn
from ..native import routes as native
from ..native.schema import InferenceRequest, InferenceResponse
from ..openai import routes as openai
from ..openai.responses import ChatCompletion, Completion, ModelList, ModelOut
from ..openai.schema import ChatCompletionRequest, CompletionRequest
from ..usage import routes as usage
from ..usage.schema import RequestCostQuery, RequestCostResponse, UsageOut
from . import account, model_info
from .families import ACCOUNT, ANTHROPIC, LORA, MODELS, NATIVE, OPENAI, ApiFamily

Handler = Callable[[Call[Any, Any]], Awaitable[Answer]]
Method = Literal["GET", "POST", "DELETE"]

# A path parameter: `{name}` is one segment, `{name:path}` the rest of the path, slashes and
# all (a model's `Owner/Name`).
_PARAMETER = re.compile(r"\{(\w+)(:path)?\}")

# Every status a generation route can answer besides 200, for the OpenAPI document.
GENERATION_ERRORS = (400, 401, 404, 413, 415, 422, 429, 503, 504)


def _pattern(template: str) -> re.Pattern[str] | None:
    """The regular expression of a path template; None for a path without parameters."""
    if _PARAMETER.search(template) is None:
        return None
    parts: list[str] = []
    at = 0
    for m in _PARAMETER.finditer(template):
        parts.append(re.escape(template[at : m.start()]))
        parts.append(f"(?P<{m[1]}>{'.+' if m[2] else '[^/]+'})")
        at = m.end()
    parts.append(re.escape(template[at:]))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class Route:
    """One API route: a method and a path template under each of its family's mounts."""

    family: ApiFamily
    method: Method
    path: str  # a template: `{name}` is a segment, `{name:path}` the rest of the path
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
    # Its handler works on the store (files, batches): its services are the store's, there
    # from the start, loading or not; the query's parameters come with the path's.
    store: bool = False
    # Its body is streamed to the handler as it arrives (`BodyStream`: a file upload), not read
    # whole by admission.
    upload: bool = False
    query: tuple[str, ...] = ()  # the query's parameters, for the OpenAPI document
    raw: str | None = None  # the media type of its raw answer (`Raw`), instead of `response`
    lora: bool = False  # its handler adds, removes or lists LoRA adapters (`LoraServices`)
    # (mount + template, its pattern or None): where it is served.
    paths: tuple[tuple[str, re.Pattern[str] | None], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        paths = tuple((m + self.path, _pattern(m + self.path)) for m in self.family.mounts)
        object.__setattr__(self, "paths", paths)

    @property
    def parameters(self) -> tuple[str, ...]:
        """Its path parameters' names, in order."""
        return tuple(m[1] for m in _PARAMETER.finditer(self.path))

    def path_for(self, params: Mapping[str, str]) -> str:
        """Its path (under its family's first mount) with `params` filled in."""
        return _PARAMETER.sub(lambda m: params[m[1]], self.paths[0][0])

    def match(self, path: str) -> Mapping[str, str] | None:
        """`path`'s parameters when this route serves it, else None."""
        for template, pattern in self.paths:
            if pattern is None:
                if path == template:
                    return {}
            elif (m := pattern.fullmatch(path)) is not None:
                return m.groupdict()
        return None


# The Files and Batch APIs' routes. Those admitted have a body read whole and bounded (or
# answer raw bytes) and are refused while draining; none takes a place in the model's capacity.
_STORED: dict[str, Any] = {"store": True, "auth": ("authorization",)}
_STORED_ADMITTED: dict[str, Any] = {**_STORED, "admitted": True, "holds_place": False}


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
    Route(
        OPENAI,
        "POST",
        "/files",
        file_routes.upload_file,
        FileObject,
        "Upload a file (multipart: `file`, `purpose: batch`, optional `expires_after`), "
        "streamed to the store; past the size bound: 413.",
        label="files",
        upload=True,
        errors=(400, 401, 413),
        **_STORED,
    ),
    Route(
        OPENAI,
        "GET",
        "/files",
        file_routes.list_files,
        FileList,
        "The caller's files (`purpose`, `after`, `limit`, `order`).",
        label="files",
        query=("purpose", "after", "limit", "order"),
        errors=(400, 401),
        **_STORED,
    ),
    Route(
        OPENAI,
        "GET",
        "/files/{file_id}",
        file_routes.get_file,
        FileObject,
        "One of the caller's files.",
        label="files",
        errors=(401, 404),
        **_STORED,
    ),
    Route(
        OPENAI,
        "DELETE",
        "/files/{file_id}",
        file_routes.delete_file,
        FileDeleted,
        "Delete one of the caller's files.",
        label="files",
        errors=(401, 404),
        **_STORED,
    ),
    Route(
        OPENAI,
        "GET",
        "/files/{file_id}/content",
        file_routes.file_content,
        FileObject,
        "A file's bytes (a batch's output: one JSON line per request).",
        label="files",
        raw="application/jsonl",
        errors=(401, 404, 503),
        **_STORED_ADMITTED,
    ),
    Route(
        OPENAI,
        "POST",
        "/batches",
        batch.create_batch,
        BatchOut,
        "Create a batch from an uploaded JSONL file; its lines are checked at once (a bad "
        "one fails the batch, its `errors` naming the line and field).",
        body=BatchCreate,
        label="batches",
        errors=(400, 401, 404, 413, 422, 503),
        **_STORED_ADMITTED,
    ),
    Route(
        OPENAI,
        "GET",
        "/batches",
        batch.list_batches,
        BatchList,
        "The caller's batches, newest first (`after`, `limit`).",
        label="batches",
        query=("after", "limit"),
        errors=(400, 401),
        **_STORED,
    ),
    Route(
        OPENAI,
        "GET",
        "/batches/{batch_id}",
        batch.get_batch,
        BatchOut,
        "One of the caller's batches.",
        label="batches",
        errors=(401, 404),
        **_STORED,
    ),
    Route(
        OPENAI,
        "POST",
        "/batches/{batch_id}/cancel",
        batch.cancel_batch,
        BatchOut,
        "Cancel a batch: lines running are stopped, finished ones kept, the rest end as "
        "`batch_cancelled`.",
        label="batches",
        errors=(401, 404, 409),
        **_STORED,
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
    Route(
        ACCOUNT,
        "POST",
        "/request-costs",
        usage.request_costs,
        RequestCostResponse,
        "What the caller's past requests cost, in nano-USD, by any id the request was answered "
        "with; ids of no request of the caller's are left out.",
        body=RequestCostQuery,
        label="usage",
        admitted=True,
        holds_place=False,
        errors=(401, 404, 422, 503),
        **_STORED,
    ),
    Route(
        ACCOUNT,
        "GET",
        "/me/usage",
        usage.my_usage,
        UsageOut,
        "The caller's usage by day (UTC), model and tier, `from` to `to` (YYYY-MM-DD, both "
        "included; default: the last 30 days).",
        label="usage",
        query=("from", "to"),
        errors=(400, 401, 404, 503),
        **_STORED,
    ),
)


class RouteTable:
    """(method, path) -> route: paths without parameters by lookup, templates by the longest
    literal prefix first. A method and path template declared twice raises."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self._exact: dict[str, dict[str, Route]] = {}
        templates: list[tuple[str, re.Pattern[str], Route]] = []
        seen: set[tuple[str, str]] = set()
        for route in routes:
            if route.body is not None and not route.admitted:
                # Admission reads a body whole (bounded) before the dispatcher validates it.
                raise ValueError(f"{route.path}: a route with a body must pass admission")
            for template, pattern in route.paths:
                key = (route.method, _PARAMETER.sub("{}", template))
                if key in seen:
                    raise ValueError(f"{route.method} {template}: declared twice")
                seen.add(key)
                if pattern is None:
                    self._exact.setdefault(template, {})[route.method] = route
                else:
                    templates.append((template[: template.index("{")], pattern, route))
        self._templates = sorted(templates, key=lambda t: -len(t[0]))

    def _on(self, path: str) -> dict[str, Route]:
        """The routes serving `path`, by method."""
        routes = self._exact.get(path)
        if routes is not None:
            return routes
        found: dict[str, Route] = {}
        for prefix, pattern, route in self._templates:
            if path.startswith(prefix) and route.method not in found and pattern.fullmatch(path):
                found[route.method] = route
        return found

    def classify(self, method: str, path: str) -> Route | None:
        """The route serving `method` on `path`; another method's route on that path (the
        dispatcher answers 405); None for a path no API route serves (FastAPI's)."""
        routes = self._on(path)
        return routes.get(method) or next(iter(routes.values()), None)

    def allowed(self, path: str) -> tuple[str, ...]:
        """The methods `path` is served with."""
        return tuple(self._on(path))


TABLE = RouteTable(ROUTES)
