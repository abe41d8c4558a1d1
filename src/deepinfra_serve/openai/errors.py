"""How the OpenAI-compatible API writes an error: OpenAI's error object, as a whole answer or,
once a stream has started, as its last event before `data: [DONE]`."""

from __future__ import annotations

from typing import Any

import orjson

from ..config.models import ResponseModel
from ..engine.errors import APIError
from .chunks import DONE


class OpenAIErrorDetail(ResponseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(ResponseModel):
    """The OpenAI routes' error body."""

    error: OpenAIErrorDetail


def error_body(err: APIError) -> dict[str, Any]:
    return {
        "error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}
    }


def stream_error(err: APIError) -> bytes:
    return b"data: " + orjson.dumps(error_body(err)) + b"\n\n" + DONE
