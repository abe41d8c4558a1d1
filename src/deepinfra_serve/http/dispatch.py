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

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engine.call import BodyStream
from ..engine.errors import APIError, read_timed_out, store_unavailable, validation_error
from ..observability.record import record_of
from ..store.database import StoreUnavailable
from .lifetime import CLIENT_CLOSED, send_error, serve_request
from .responses import send_json
from .route_table import Route
from .routes import TABLE
from .runner import Admission, Runner


class Dispatch:
    """Serves the routes of the table and hands every other request to `fallback` (FastAPI)."""

    def __init__(self, runner: Runner, fallback: ASGIApp) -> None:
        self.runner = runner
        self.state = runner.state
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = record_of(scope) if scope["type"] == "http" else None
        route: Route | None = None if record is None else record.route
        if record is None or route is None:
            await self.fallback(scope, receive, send)
            return
        state, runner = self.state, self.runner
        admit = None
        try:
            if scope["method"] != route.method:
                allowed = ", ".join(TABLE.allowed(scope["path"]))
                raise APIError(
                    405, "Method Not Allowed", code="method_not_allowed", headers={"Allow": allowed}
                )
            if route.auth:
                record.tenant = state.api_keys.check(scope["headers"], route.auth)
            params = route.match(scope["path"]) or {}
            if route.store and scope["query_string"]:
                query = parse_qsl(scope["query_string"].decode("latin-1"))
                params = {**dict(query), **params}
            body: object = None
            if route.upload:
                body = BodyStream(_header(scope, b"content-type"), self._chunks(receive))
            elif route.body is not None:
                body = _validated(route, (await receive()).get("body", b""))
            call = await runner.call(route, body, params, record)
            if not route.admitted:  # an answer from what the server knows: no engine work
                answer = await route.handle(call)
                assert isinstance(answer, BaseModel)  # these routes answer JSON models only
                payload = answer.model_dump_json(exclude_none=route.family.exclude_none)
                await send_json(send, record, 200, payload.encode())
                return
            if record.tier.name == "flex":
                # Waits for room inside `serve_request`: a client that goes away leaves at once.
                async def admit() -> None:
                    await runner.admit(route, record, Admission.TIER)

            else:
                await runner.admit(route, record, Admission.TIER)
        except APIError as err:
            await send_error(send, record, err, route.family)
            return
        except ClientGone:
            record.status = CLIENT_CLOSED
            return
        except StoreUnavailable:
            await send_error(send, record, store_unavailable(), route.family)
            return
        try:
            await serve_request(
                receive,
                send,
                lambda: route.handle(call),
                record=record,
                timeout_s=state.request_timeout_s,
                family=route.family,
                admit=admit,
            )
        finally:
            if record.place is not None:
                record.place.release()

    async def _chunks(self, receive: Receive) -> AsyncIterator[bytes]:
        """A streamed body's chunks, each due within the read timeout (408 past it); a client
        that goes away mid-body raises ClientGone."""
        timeout_s = self.state.read_timeout_s
        while True:
            try:
                async with asyncio.timeout(timeout_s):
                    message = await receive()
            except TimeoutError:
                raise read_timed_out(timeout_s) from None
            if message["type"] != "http.request":
                raise ClientGone
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return


class ClientGone(Exception):
    """The client went away before its body was in."""


def _header(scope: Scope, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), "")


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
