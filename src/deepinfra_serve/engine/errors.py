"""One error type that carries its HTTP status, and the errors of the server's own state, each
built here and nowhere else.

Anything below the HTTP layer raises `APIError`; each API writes it in its own shape (its
package's `errors` module), chosen by the route that serves the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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


def rate_limited() -> APIError:
    """The caller's key has as many requests in flight to this model as its limit allows
    (DeepInfra's "Rate limited", distinct from "Model busy")."""
    return APIError(
        429, "Rate limited", type="rate_limit_error", code="rate_limited", headers=_RETRY
    )


def flex_timed_out(max_wait_s: float) -> APIError:
    return APIError(
        429,
        f"No capacity for service_tier flex within {max_wait_s:g} s; retry later",
        type="rate_limit_error",
        code="flex_capacity_unavailable",
        headers=_RETRY,
    )


def engine_dead() -> APIError:
    return APIError(
        503, "The inference engine stopped; retry later", type="server_error", code="engine_dead"
    )


def store_unavailable() -> APIError:
    return APIError(
        503,
        "The store of files and batches is not open yet; retry later",
        type="server_error",
        code="store_unavailable",
        headers=_RETRY,
    )


def read_timed_out(timeout_s: float) -> APIError:
    """The request's headers or body did not arrive in time; the connection is closed."""
    return APIError(
        408,
        f"The request did not arrive within {timeout_s:g} s",
        code="request_timeout",
        headers={"Connection": "close"},
    )


def too_many_connections() -> APIError:
    """The server holds as many connections as it accepts."""
    return APIError(
        503,
        "Too many open connections; retry later",
        type="server_error",
        code="too_many_connections",
        headers={**_RETRY, "Connection": "close"},
    )


def timed_out(timeout_s: float) -> APIError:
    return APIError(
        504, f"Request timed out after {timeout_s:g} s", type="server_error", code="timeout"
    )


def internal_error() -> APIError:
    return APIError(500, "Internal server error", type="server_error", code="internal_error")


def not_found(model: str) -> APIError:
    return APIError(
        404, f"The model `{model}` does not exist", param="model", code="model_not_found"
    )


def invalid(param: str, message: str, status: int = 422) -> APIError:
    """A field the request got wrong: the message and `param` both name it."""
    return APIError(status, f"{param}: {message}", param=param, code="invalid_value")


def _field(loc: tuple[Any, ...]) -> str:
    # ("body", "messages", 0, "content") -> "messages.0.content"; pydantic adds union-branch
    # names (e.g. "list[str]") to locations, which mean nothing to a client.
    parts = [str(p) for p in loc[1:] if not (isinstance(p, str) and ("[" in p or p == "str"))]
    return ".".join(parts) or str(loc[0])


def validation_error(errors: Sequence[Any]) -> APIError:
    """pydantic's errors, their locations under "body", as one 422 naming the deepest field
    (of a union, the branch that got furthest says what is wrong, not the branch that failed
    at once: a content list's bad block rather than "not a string")."""
    first = (
        max(errors, key=lambda e: len(_field(tuple(e["loc"])).split(".")))
        if errors
        else {"loc": ("body",), "msg": "invalid request", "type": ""}
    )
    if first.get("type") == "json_invalid":
        return APIError(400, "Request body is not valid JSON", code="invalid_json")
    messages = [
        f"{_field(tuple(e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in errors
    ]
    return APIError(
        422, "; ".join(messages), param=_field(tuple(first["loc"])), code="invalid_value"
    )
