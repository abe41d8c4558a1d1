"""Handlers of the Messages API's routes (the route table, `http.routes`, serves them under
/anthropic/v1)."""

from __future__ import annotations

from starlette.datastructures import State

from ..engine.errors import model_loading
from ..engine.generation import Answer
from .messages import MessagesService
from .schema import MessagesRequest, TokenCount, TokenCountRequest


def _service(state: State) -> MessagesService:
    service: MessagesService | None = state.apis.get("anthropic")
    if service is None:
        raise model_loading()
    return service


async def messages(state: State, body: MessagesRequest, _: str, __: object) -> Answer:
    return await _service(state).create(body)


async def count_tokens(state: State, body: TokenCountRequest, _: str, __: object) -> TokenCount:
    return await _service(state).count_tokens(body)
