"""One error type that carries its HTTP status, the errors of the server's own state (each
built here and nowhere else), and the handlers that render them.

Routes raise `APIError`; request validation errors are turned into the same shape with the
offending field named in `param`, so clients see one error format per API. Which format is the
request's: the outermost middleware classified it (`apis`); the generation routes know theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..observability.record import record_of

log = logging.getLogger(__name__)


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """The OpenAI routes' error body."""

    error: OpenAIErrorDetail


class NativeError(BaseModel):
    """The native route's error body, DeepInfra's DeepError."""

    error: str


_ERROR_STATUSES = {
    400: "Bad request (a prompt longer than the context, a template the messages break)",
    401: "Missing or invalid API key",
    404: "Unknown model",
    413: "Request body too large",
    422: "A field is out of range or malformed; `param` names it",
    429: "Model busy, retry later",
    503: "Loading, shutting down, or the engine stopped",
    504: "The request ran past its time limit",
}


def error_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors a generation route can answer."""
    return {
        status: {"model": model, "description": text} for status, text in _ERROR_STATUSES.items()
    }


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type

    def body(self, native: bool = False) -> dict[str, Any]:
        if native:
            # DeepInfra's native API answers errors as {"error": "..."}.
            return {"error": self.message}
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


_RETRY = {"Retry-After": "1"}


def model_loading() -> APIError:
    return APIError(
        503,
        "The model is loading; retry later",
        type="server_error",
        code="model_loading",
        headers=_RETRY,
    )


def shutting_down() -> APIError:
    return APIError(
        503,
        "Server is shutting down; retry later",
        type="server_error",
        code="shutting_down",
        headers=_RETRY,
    )


def model_busy() -> APIError:
    return APIError(
        429, "Model busy, retry later", type="rate_limit_error", code="model_busy", headers=_RETRY
    )


def engine_dead() -> APIError:
    return APIError(
        503, "The inference engine stopped; retry later", type="server_error", code="engine_dead"
    )


def timed_out(timeout_s: float) -> APIError:
    return APIError(
        504, f"Request timed out after {timeout_s:g} s", type="server_error", code="timeout"
    )


def internal_error() -> APIError:
    return APIError(500, "Internal server error", type="server_error", code="internal_error")


def _field(loc: tuple[Any, ...]) -> str:
    # ("body", "messages", 0, "content") -> "messages.0.content"; pydantic adds union-branch
    # names (e.g. "list[str]") to locations, which mean nothing to a client.
    parts = [str(p) for p in loc[1:] if not (isinstance(p, str) and ("[" in p or p == "str"))]
    return ".".join(parts) or str(loc[0])


def validation_error(errors: Sequence[Any]) -> APIError:
    """pydantic's errors, their locations under "body", as one 422 naming the first field."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return APIError(400, "Request body is not valid JSON", code="invalid_json")
    messages = [
        f"{_field(tuple(e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in errors
    ]
    return APIError(
        422, "; ".join(messages), param=_field(tuple(first["loc"])), code="invalid_value"
    )


def _render(request: Request, err: APIError) -> JSONResponse:
    record = record_of(request.scope)
    native = record is not None and record.endpoint.native
    return JSONResponse(err.body(native), status_code=err.status, headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _render(request, validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown paths and wrong methods answer in the API's own error shape too.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _render(request, APIError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _render(request, internal_error())
