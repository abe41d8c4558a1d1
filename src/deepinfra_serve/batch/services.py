"""What the Files and Batch APIs' handlers share: the store and settings they work with, whose
files and batches a call may see, and their answers for what is not there."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config.settings import ServerSettings
from ..engine.call import Call
from ..engine.errors import APIError
from ..store.database import Store
from .input import LineCheck


@dataclass(frozen=True)
class BatchServices:
    store: Store
    settings: ServerSettings
    check: LineCheck  # a line's body, as its route's schema and the served models take it


def owner_of(call: Call[Any, Any]) -> str:
    """Whose files and batches: the API key's digest ("" on an open server, one tenant)."""
    return "" if call.tenant is None else call.tenant.owner


def no_such(kind: str, what: str, param: str) -> APIError:
    return APIError(404, f"No such {kind} object: {what}", param=param, code="not_found")


def page_limit(params: Mapping[str, str], default: int, most: int) -> int:
    raw = params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise APIError(400, f"limit: an integer from 1 to {most}", param="limit")
    return int(raw)
