"""The generation routes, served as plain ASGI in front of FastAPI.

Chat, completions and native inference carry nearly all of the traffic, and FastAPI's request
handling (a `Request`, dependency resolution, a stdlib JSON parse before validation) and
Starlette's routing and per-frame send wrappers cost about a tenth of the API process's CPU on
them, measured. So these routes are answered here, ahead of FastAPI, as the outermost
middleware classified the path (`apis.classify`): the API key is checked first, the body is
validated from its bytes in one pydantic call, and the answer is written by
`request_lifetime.serve_request`. Every error keeps the shape FastAPI gave it: 422s
name the field, OpenAI's or DeepInfra's error body by route. Everything else (models, probes,
metrics, the OpenAPI document, which declares these routes too) stays with FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engine.errors import APIError, validation_error
from ..native.routes import inference
from ..native.schema import InferenceRequest
from ..observability.record import record_of
from ..openai.routes import chat_completions, completions
from ..openai.schema import ChatCompletionRequest, CompletionRequest
from .lifetime import Answer, send_error, serve_request
from .routes import CHAT, COMPLETIONS, INFERENCE, NATIVE_PREFIX

Handler = Callable[[State, Any, str], Awaitable[Answer]]


class Route(NamedTuple):
    """`handle(state, body, rest)`: `rest` is what the path holds past the route's prefix
    (the native route's model)."""

    body: type[BaseModel]
    handle: Handler


_ROUTES = {
    CHAT: Route(ChatCompletionRequest, chat_completions),
    COMPLETIONS: Route(CompletionRequest, completions),
    INFERENCE: Route(InferenceRequest, inference),
}


class GenerationRoutes:
    """Serves the generation routes and hands every other request to `fallback` (FastAPI).

    Which route a request is for, the outermost middleware has decided (`apis.classify`)."""

    def __init__(self, state: State, fallback: ASGIApp) -> None:
        self.state = state
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = record_of(scope) if scope["type"] == "http" else None
        route = None if record is None else _ROUTES.get(record.endpoint)
        if route is None:
            await self.fallback(scope, receive, send)
            return
        native = record.endpoint.native
        rest = scope["path"][len(NATIVE_PREFIX) :] if native else ""
        await self._serve(route, native, rest, scope, receive, send)

    async def _serve(
        self, route: Route, native: bool, rest: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        state = self.state
        try:
            if scope["method"] != "POST":
                raise APIError(
                    405, "Method Not Allowed", code="method_not_allowed", headers={"Allow": "POST"}
                )
            state.api_keys.check(_header(scope, b"authorization"))
            # Admission has read the whole body (bounded) and replays it as one message.
            body = (await receive()).get("body", b"")
            if not body:
                raise APIError(400, "Request body is required", code="invalid_request")
            try:
                req = route.body.model_validate_json(body)
            except ValidationError as exc:
                errors = exc.errors(include_url=False)
                raise validation_error(
                    [{**e, "loc": ("body", *e["loc"])} for e in errors]
                ) from None
        except APIError as err:
            await send_error(send, err, native)
            return
        await serve_request(
            receive,
            send,
            route.handle(state, req, rest),
            timeout_s=state.request_timeout_s,
            native=native,
            exclude_none=native,
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
