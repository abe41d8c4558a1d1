"""How the Messages API writes an error: Anthropic's `{"type": "error", "error": {...}}`, as a
whole answer or as a stream's `error` event. The type follows the status, as Anthropic's SDKs
read it; the status and message are the server's own."""

from __future__ import annotations

from typing import Any, Literal

import orjson

from ..config.models import ResponseModel
from ..engine.errors import APIError

_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


class ErrorDetail(ResponseModel):
    type: str
    message: str


class AnthropicError(ResponseModel):
    """The Messages API's error body."""

    type: Literal["error"] = "error"
    error: ErrorDetail


def error_body(err: APIError) -> dict[str, Any]:
    kind = _TYPES.get(err.status, "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def stream_error(err: APIError) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(error_body(err)) + b"\n\n"
