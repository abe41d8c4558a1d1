"""Handlers of the Messages API's routes (the route table, `http.routes`, serves them under
/anthropic/v1)."""

from __future__ import annotations

from ..engine.call import Call
from ..engine.generation import Answer
from .messages import MessagesService
from .schema import MessagesRequest, TokenCount, TokenCountRequest


async def messages(call: Call[MessagesService, MessagesRequest]) -> Answer:
    return await call.services.create(call.body, call.record)


async def count_tokens(call: Call[MessagesService, TokenCountRequest]) -> TokenCount:
    return await call.services.count_tokens(call.body)
