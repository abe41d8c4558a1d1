"""Per-request record: the request id, the route that serves it, what it is served as and for
whom, and what it cost, filled in as it runs.

Whoever runs a request makes its record: the middleware for an HTTP request, the request
runner (`http.runner`) for one no client waits on (a webhook job). The dispatcher resolves the
model, tier and tenant onto it once, and the services are handed it explicitly; the generation
core writes its usage into it; when it ends, `accounting.account` turns it into metrics and
one access-log line. A context variable holds the bound record for log lines only.
"""

from __future__ import annotations

import os
import re
import string
import time
from collections.abc import MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config.pricing import NO_USAGE, Usage
from ..config.served import Served, Tenant
from ..config.tiers import DEFAULT as DEFAULT_TIER
from ..config.tiers import Tier

# An ASGI scope: the record rides on it for code outside the request's context.
Scope = MutableMapping[str, Any]
_ALPHABET = (string.ascii_letters + string.digits).encode()
# A random byte below 248 (4 x 62) names one of the 62 characters, each as often; the 8 bytes
# above are dropped.
_TO_ALPHABET = bytes.maketrans(bytes(range(248)), _ALPHABET * 4)
_DROPPED = bytes(range(248, 256))
if TYPE_CHECKING:
    from .spans import RequestTrace

_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# What a client says it is (`x-deepinfra-source`, sent by coding agents for attribution): kept
# for the access line only when it is a short, plain token.
_SOURCE = re.compile(r"[A-Za-z0-9._:/@+-]{1,64}")
_SCOPE_KEY = "deepinfra_record"


def new_request_id() -> str:
    """DeepInfra's ids look like "RWZDRhS5kdoM1XWwXLEshynO": 24 letters and digits, uniform
    (143 random bits). One draw of 32 random bytes mapped in C (`bytes.translate`), a few times
    cheaper than a character at a time in Python, on every request (docs/architecture.md has
    the figures; a test holds it uniform). Fewer than 24 of the 32 survive the drop in about 4
    of 10 million draws, which then draw again."""
    while True:
        chars = os.urandom(32).translate(_TO_ALPHABET, _DROPPED)
        if len(chars) >= 24:
            return chars[:24].decode()


def source_from(header: bytes | None) -> str | None:
    """The client's `x-deepinfra-source`, or None when absent or not a plain token."""
    if header is None:
        return None
    text = header.decode("latin-1")
    return text if _SOURCE.fullmatch(text) else None


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one."""
    if header and _CLIENT_ID.fullmatch(header):
        return header
    return new_request_id()


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    model: str  # the card this process serves: the metrics' label
    # The route table's entry that serves it (`http.routes.Route`); None: not an API route.
    route: Any = None
    method: str = "POST"
    path: str = ""
    via: str = "http"  # who runs it: "http", or "background" or "batch" for work no client waits on
    batch: tuple[str, str] | None = None  # a batch line's (batch id, custom_id)
    capture_content: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    status: int = 500  # the answer's, once its start is sent
    usage: Usage = NO_USAGE
    finish_reason: str | None = None
    user: str | None = None
    source: str | None = None  # the client's x-deepinfra-source
    served: Served | None = None  # the model it named, once the dispatcher resolved it
    tenant: Tenant | None = None  # its API key's tenant; None on an open server
    # Work from the store whose key is no longer configured (no tenant): the digest it was
    # accepted under, which its usage is still recorded under.
    owner: str = ""
    cache_salt: str | None = None  # the caller's prefix-cache partition; never logged
    tier: Tier = DEFAULT_TIER  # the service tier it is served and billed at
    place: Any = None  # its place in the model's capacity (`http.capacity.Place`)
    # False: its work is thrown away (a batch line handed back when the server drains, or whose
    # claim another run superseded): its access line bills nothing.
    billed: bool = True
    content: dict[str, Any] | None = None
    trace: RequestTrace | None = None  # its OpenTelemetry trace, when the server traces

    @property
    def api(self) -> str | None:
        """The metrics label of a metered route."""
        return None if self.route is None else self.route.label

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def capture(self, key: str, value: Any) -> None:
        """Keep request or response content for the access log, when the server logs it."""
        if self.capture_content:
            self.content = {**(self.content or {}), key: value}

    def settle(self, usage: Usage, finish_reason: str | None) -> None:
        """The request's usage, once its generation has ended."""
        self.usage = usage
        self.finish_reason = finish_reason

    @property
    def serves(self) -> Served:
        """What it is served as; the dispatcher resolves it before any service runs."""
        if self.served is None:
            raise LookupError(f"request {self.request_id}: its model was never resolved")
        return self.served


_current: ContextVar[RequestRecord | None] = ContextVar("deepinfra_request", default=None)


def current() -> RequestRecord:
    """The record bound to the running task, for log lines; an error where none is bound (a
    service is handed its record, it never reads it from here)."""
    record = _current.get()
    if record is None:
        raise LookupError("no request is bound to this task")
    return record


def current_request_id() -> str | None:
    record = _current.get()
    return record.request_id if record else None


def bind(record: RequestRecord, scope: Scope | None = None) -> Any:
    """Bind `record` to the running task (for log lines) and, for an HTTP request, to its
    scope (for the layers that are handed the scope)."""
    if scope is not None:
        scope.setdefault("state", {})[_SCOPE_KEY] = record
    return _current.set(record)


def unbind(token: Any) -> None:
    _current.reset(token)


def record_of(scope: Scope) -> RequestRecord | None:
    return scope.get("state", {}).get(_SCOPE_KEY)
