"""The service's OpenAPI document: the route table's routes, declared to FastAPI only for the
document (the dispatcher serves them), beside the routes FastAPI serves itself."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from .route_table import Route
from .routes import ROUTES

_ERROR_STATUSES = {
    400: "Bad request (a prompt longer than the context, a template the messages break)",
    401: "Missing or invalid API key",
    404: "Unknown model, file or batch",
    409: "The batch has ended: it cannot be cancelled",
    413: "Request body too large (a gzip body: once inflated; an upload past its bound)",
    415: "A Content-Encoding other than gzip",
    422: "A field is out of range or malformed; `param` names it",
    429: "Rate limited (the key's limit) or Model busy, retry later",
    503: "Loading, shutting down, or the engine stopped",
    504: "The request ran past its time limit",
}


_PARAMETERS = {
    "model": "The model's name, Owner/Name.",
    "file_id": "A file's id.",
    "batch_id": "A batch's id.",
    "lora_model_name": "A LoRA adapter's model name, Owner/Name.",
}
_QUERY = {
    "purpose": ("Only files of this purpose.", {"type": "string"}),
    "after": ("The id after which the page starts.", {"type": "string"}),
    "limit": ("How many at most.", {"type": "integer", "minimum": 1}),
    "order": ("By creation: asc or desc (the default).", {"enum": ["asc", "desc"]}),
    "from": ("The first day, YYYY-MM-DD (UTC).", {"type": "string", "format": "date"}),
    "to": ("The last day, included; default: today.", {"type": "string", "format": "date"}),
}
# An upload's form (OpenAI's `files.create`).
_UPLOAD = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "purpose"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "purpose": {"type": "string", "enum": ["batch"]},
                    "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                    "expires_after[seconds]": {
                        "type": "integer",
                        "minimum": 3600,
                        "maximum": 2592000,
                    },
                },
            }
        }
    },
}


def _parameter(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": _PARAMETERS[name],
        "schema": {"type": "string", "title": name.title()},
    }


def _query(name: str) -> dict[str, Any]:
    description, schema = _QUERY[name]
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _declaration(route: Route) -> APIRoute:
    """The route as FastAPI would declare it: its path parameter, its body and its answers."""
    params = []
    if route.body is not None:
        params.append(
            inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=route.body)
        )

    def endpoint(**_: Any) -> None:
        """Never called: the dispatcher serves the route."""

    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # inspect reads it
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": route.family.error_model, "description": _ERROR_STATUSES[status]}
        for status in route.errors
    }
    if route.streams:
        responses[200] = {"content": {"text/event-stream": {}}}
    if route.raw is not None:
        binary = {"schema": {"type": "string", "format": "binary"}}
        responses[200] = {"description": "Its bytes", "content": {route.raw: binary}}
    family = route.family
    # The path's parameters are declared as they are, not as parameters FastAPI would validate
    # (and then document a 422 of its own for).
    declared = [_parameter(n) for n in route.parameters] + [_query(n) for n in route.query]
    extra: dict[str, Any] = {"parameters": declared} if declared else {}
    if route.upload:
        extra["requestBody"] = _UPLOAD
    return APIRoute(
        family.mounts[0] + route.path,
        endpoint,
        methods=[route.method],
        name=route.handle.__name__,
        description=route.description,
        response_model=None if route.raw is not None else route.response,
        response_model_exclude_none=family.exclude_none,
        responses=responses,
        tags=[family.name],
        openapi_extra=extra or None,
        response_class=Response if route.raw is not None else JSONResponse,
    )


def document(app: FastAPI) -> dict[str, Any]:
    """The whole document, made once and kept."""
    if app.openapi_schema is None:
        app.openapi_schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=[*(_declaration(r) for r in ROUTES), *app.routes],
        )
    return app.openapi_schema
