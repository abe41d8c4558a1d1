"""Errors of the routes FastAPI serves (probes, metrics, the document, unknown paths), in the
default API's shape (OpenAI's), as the dispatcher writes the table's routes' own."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine.errors import APIError, internal_error, validation_error
from .families import DEFAULT_FAMILY

log = logging.getLogger(__name__)


def _render(request: Request, err: APIError) -> JSONResponse:
    # FastAPI serves no route of the table: its paths take the default shape.
    body = DEFAULT_FAMILY.error_body(err)
    return JSONResponse(body, status_code=err.status, headers=err.headers)


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
