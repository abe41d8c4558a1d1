"""The route table's routes, served as plain ASGI in front of FastAPI.

Chat, completions and native inference carry nearly all of the traffic, and FastAPI's request
handling (a `Request`, dependency resolution, a stdlib JSON parse before validation) and
Starlette's routing and per-frame send wrappers cost about a tenth of the API process's CPU on
them, measured. So every route of the table is answered here, as the outermost middleware
classified the path: the method is checked, then the API key, then the body is validated from
its bytes in one pydantic call, the model it names checked against the card, and the answer
written by `lifetime.serve_request`. Errors take the route's API shape, 422s naming the field.
Everything else (probes, metrics, the OpenAPI document) stays with FastAPI.
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engine.errors import APIError, validation_error
from ..observability.record import record_of
from .capacity import Capacity, Place
from .families import check_served
from .lifetime import send_error, serve_request
from .responses import send_json
from .routes import Route


class Dispatch:
    """Serves the routes of the table and hands every other request to `fallback` (FastAPI)."""

    def __init__(self, state: State, fallback: ASGIApp) -> None:
        self.state = state
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = record_of(scope) if scope["type"] == "http" else None
        route: Route | None = None if record is None else record.route
        if route is None:
            await self.fallback(scope, receive, send)
            return
        state = self.state
        rest = route.rest(scope["path"])
        place: Place | None = None
        admit = None
        try:
            if scope["method"] != route.method:
                raise APIError(
                    405,
                    "Method Not Allowed",
                    code="method_not_allowed",
                    headers={"Allow": route.method},
                )
            tenant = None
            if route.auth:
                tenant = state.api_keys.check(scope["headers"], route.auth)
                if tenant is not None and not state.shared_prompt_cache:
                    record.cache_salt = tenant.cache_salt  # type: ignore[union-attr]
            body = None
            if route.body is not None:
                body = _validated(route, (await receive()).get("body", b""))
            if route.model_in is not None:
                model = rest if route.model_in == "path" else body.model  # type: ignore[union-attr]
                check_served(state.card, model, route.family)
            if not route.admitted:  # an answer from what the server knows: no engine work
                answer = await route.handle(state, body, rest, tenant)
                payload = answer.model_dump_json(exclude_none=route.family.exclude_none)
                await send_json(send, 200, payload.encode())
                return
            # Its place in the model's capacity: its key's limit, its tier's share.
            if route.holds_place:
                capacity: Capacity = state.capacity
                tier = capacity.policy.applied(body.service_tier if route.tiered else None)  # type: ignore[union-attr]
                record.tier = tier  # type: ignore[union-attr]
                if tier.name != "flex":
                    place = record.place = capacity.take(tenant, tier)  # type: ignore[union-attr]
                else:

                    async def admit() -> None:
                        nonlocal place
                        place = record.place = await capacity.wait_flex(  # type: ignore[union-attr]
                            tenant, tier, state.flex_max_wait_s
                        )

        except APIError as err:
            await send_error(send, err, route.family)
            return
        try:
            await serve_request(
                receive,
                send,
                lambda: route.handle(state, body, rest, tenant),
                timeout_s=state.request_timeout_s,
                family=route.family,
                admit=admit,
            )
        finally:
            if place is not None:
                place.release()


def _validated(route: Route, body: bytes) -> object:
    """The body as the route's model; admission has read it whole and replays it as one
    message (bounded in size)."""
    if not body:
        raise APIError(400, "Request body is required", code="invalid_request")
    assert route.body is not None
    try:
        return route.body.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise validation_error([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
