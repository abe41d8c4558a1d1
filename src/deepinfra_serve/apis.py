"""Which API a request belongs to, decided once per request from one table of path prefixes.

The outermost middleware classifies the path and keeps the answer on the request's record;
admission, metrics, error rendering and stream guards read it from there.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Family = Literal["openai", "native"]

OPENAI_MOUNT = "/v1/openai"
OPENAI_ALIAS = "/v1"  # DeepInfra serves the OpenAI API without the /openai segment too
NATIVE_MOUNT = "/v1/inference"


class Endpoint(NamedTuple):
    """`api` labels metrics and logs (None: not a generation endpoint); `family` picks the
    error shape; generation endpoints go through admission control."""

    api: str | None
    family: Family

    @property
    def native(self) -> bool:
        return self.family == "native"


CHAT = Endpoint("chat", "openai")
COMPLETIONS = Endpoint("completions", "openai")
INFERENCE = Endpoint("inference", "native")
OTHER_OPENAI = Endpoint(None, "openai")

_TABLE: tuple[tuple[str, Endpoint], ...] = (
    (f"{OPENAI_MOUNT}/chat/completions", CHAT),
    (f"{OPENAI_ALIAS}/chat/completions", CHAT),
    (f"{OPENAI_MOUNT}/completions", COMPLETIONS),
    (f"{OPENAI_ALIAS}/completions", COMPLETIONS),
    (f"{NATIVE_MOUNT}/", INFERENCE),
)


def classify(path: str) -> Endpoint:
    for prefix, endpoint in _TABLE:
        if path.startswith(prefix):
            return endpoint
    return OTHER_OPENAI


def served_through(family: Family, model: str) -> str:
    """Where a model is reached through an API, for error messages."""
    return OPENAI_MOUNT if family == "openai" else f"{NATIVE_MOUNT}/{model}"
