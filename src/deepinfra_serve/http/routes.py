"""Which API a request belongs to, decided once per request from its path.

The outermost middleware classifies the path and keeps the answer on the request's record;
admission, metrics, error rendering and the generation routes read it from there.
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

_EXACT = {
    f"{mount}{path}": endpoint
    for mount in (OPENAI_MOUNT, OPENAI_ALIAS)
    for path, endpoint in (("/chat/completions", CHAT), ("/completions", COMPLETIONS))
}
NATIVE_PREFIX = f"{NATIVE_MOUNT}/"


def classify(path: str) -> Endpoint:
    """A generation endpoint: the OpenAI routes by exact path, the native one by its prefix and
    a model name after it. The generation routes are served by this same answer."""
    endpoint = _EXACT.get(path)
    if endpoint is not None:
        return endpoint
    if path.startswith(NATIVE_PREFIX) and len(path) > len(NATIVE_PREFIX):
        return INFERENCE
    return OTHER_OPENAI


def served_through(family: Family, model: str) -> str:
    """Where a model is reached through an API, for error messages."""
    return OPENAI_MOUNT if family == "openai" else f"{NATIVE_MOUNT}/{model}"
