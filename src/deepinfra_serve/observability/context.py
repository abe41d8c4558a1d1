"""Per-request record: the request id and what the request cost, filled in as it runs.

The middleware creates the record and keeps it in a context variable; the API services write
their figures into it; when the response's last byte is sent, the middleware turns it into
metrics and one access-log line.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

_ALPHABET = string.ascii_letters + string.digits
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_request_id() -> str:
    # DeepInfra's ids look like "RWZDRhS5kdoM1XWwXLEshynO": 24 letters and digits.
    return "".join(secrets.choice(_ALPHABET) for _ in range(24))


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a fresh one."""
    if header and _CLIENT_ID.fullmatch(header):
        return header
    return new_request_id()


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    model: str
    api: str | None
    capture_content: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    finish_reason: str | None = None
    user: str | None = None
    content: dict[str, Any] | None = None

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()

    def usage(self, prompt: int, completion: int, cost: float, finish_reason: str | None) -> None:
        self.prompt_tokens = prompt
        self.completion_tokens = completion
        self.cost = cost
        self.finish_reason = finish_reason


_current: ContextVar[RequestRecord | None] = ContextVar("deepinfra_request", default=None)


def current() -> RequestRecord:
    """The running request's record (a detached one outside a request, so callers need no
    checks)."""
    return _current.get() or RequestRecord(new_request_id(), "", None)


def current_request_id() -> str | None:
    record = _current.get()
    return record.request_id if record else None


def bind(record: RequestRecord) -> Any:
    return _current.set(record)


def unbind(token: Any) -> None:
    _current.reset(token)
