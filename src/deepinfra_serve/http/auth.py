"""API keys: `Authorization: Bearer <key>`, checked in constant time.

Keys come from DEEPINFRA_SERVE_API_KEYS (comma-separated) and/or a file with one key per line
(DEEPINFRA_SERVE_API_KEYS_FILE, the shape of a mounted Kubernetes Secret). No key configured
means the API is open; the server warns about it at start. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from pathlib import Path

from ..engine.errors import APIError

log = logging.getLogger(__name__)


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        self._keys = tuple(k.encode() for k in keys if k)

    @classmethod
    def load(cls, inline: str, file: Path | None) -> ApiKeys:
        keys = [k.strip() for k in inline.split(",")]
        if file is not None:
            keys += [line.strip() for line in file.read_text().splitlines()]
        return cls([k for k in keys if k and not k.startswith("#")])

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def accepts(self, given: str | None) -> bool:
        """Whether `given` (the key itself) is one of the keys."""
        if not given:
            return False
        token = given.encode()
        # Compare against every key, so the time taken says nothing about which one matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(key, token)
        return matched

    def check(self, headers: Iterable[tuple[bytes, bytes]], names: tuple[str, ...]) -> str | None:
        """The caller's key, or None when no keys are configured; 401 unless one of the
        headers `names` (the route's, in the route table) carries a key that matches.
        `Authorization` carries it as a bearer token; any other header is the key itself."""
        if not self._keys:
            return None
        wanted = {name.encode(): name for name in names}
        found = next(((wanted[k], v) for k, v in headers if k in wanted), None)
        key = None if found is None else _key(*found)
        if key is not None and self.accepts(key):
            return key
        raise APIError(
            401,
            f"Missing API key: send {_how(names[0])}" if found is None else "Invalid API key",
            type="authentication_error",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


def cache_salt(key: str) -> str:
    """The prefix-cache salt of a key's requests (vLLM's `cache_salt`): requests with different
    salts share no cached blocks, so no key can see another's prompts through `cached_tokens`
    or timing, while one key's requests share with each other, in every API process and
    replica. A digest, so that the key itself goes nowhere near the engine."""
    return hashlib.sha256(b"deepinfra-serve prefix cache\0" + key.encode()).hexdigest()


def _key(name: str, value: bytes) -> str | None:
    text = value.decode("latin-1")
    if name != "authorization":
        return text.strip()
    scheme, _, token = text.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _how(name: str) -> str:
    return "Authorization: Bearer <key>" if name == "authorization" else f"{name}: <key>"
