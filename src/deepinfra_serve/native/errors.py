"""How the native API writes an error: DeepInfra's `{"error": "..."}`, as a whole answer or as
a stream's last event."""

from __future__ import annotations

from typing import Any

import orjson

from ..config.models import ResponseModel
from ..engine.errors import APIError


class NativeError(ResponseModel):
    """The native route's error body, DeepInfra's DeepError."""

    error: str


def error_body(err: APIError) -> dict[str, Any]:
    return {"error": err.message}


def stream_error(err: APIError) -> bytes:
    return b"data: " + orjson.dumps(error_body(err)) + b"\n\n"
