"""A request as a value: what a route's handler is given, and what running one to its end
without an HTTP connection gives back.

The dispatcher (or the request runner, for a request no client waits on) validates the body,
resolves what the request is served as onto its record, and finds the API's services; the
handler gets all of it in one `Call` and needs nothing from the HTTP connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

from ..config.pricing import Usage
from ..config.served import Tenant
from ..observability.record import RequestRecord
from .errors import APIError

S = TypeVar("S")  # the API's services (or the server's catalog, for a route with no engine work)
B = TypeVar("B")  # the validated body (None for a route without one)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A request run to its end with no client waiting: its answer (a JSON model, or a
    stream's frames as bytes) or its error, and what it cost."""

    status: int
    answer: BaseModel | bytes | None
    error: APIError | None
    record: RequestRecord

    @property
    def usage(self) -> Usage:
        return self.record.usage


@dataclass(frozen=True, slots=True)
class BodyStream:
    """A body too large to read whole (a file upload): its chunks as they arrive. Iterating it
    ends early when the client goes away."""

    content_type: str
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class Call(Generic[S, B]):
    """One request, handed to its route's handler."""

    services: S
    body: B
    params: Mapping[str, str]  # the path's named parameters, then the query's
    record: RequestRecord
    # Runs another body on the same route after the answer has gone out, with a record of its
    # own (the same request id), keeping this request's place in the model's capacity until it
    # ends; the caller awaits it where it likes (a webhook job).
    detach: Callable[[B], Awaitable[Outcome]]

    @property
    def tenant(self) -> Tenant | None:
        return self.record.tenant
