"""API keys: `Authorization: Bearer <key>`, checked in constant time.

Keys come from DEEPINFRA_SERVE_API_KEYS (comma-separated) and/or a file with one key per line
(DEEPINFRA_SERVE_API_KEYS_FILE, the shape of a mounted Kubernetes Secret). No key configured
means the API is open; the server warns about it at start. Keys are never logged.
"""

from __future__ import annotations

import hmac
import logging
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

    def accepts(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        # Compare against every key, so the time taken says nothing about which one matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(key, given)
        return matched

    def check(self, authorization: str | None) -> None:
        """401 unless a key is given that matches, when keys are configured (the generation
        routes only: models and probes stay open)."""
        if self._keys and not self.accepts(authorization):
            raise APIError(
                401,
                "Missing API key: send Authorization: Bearer <key>"
                if authorization is None
                else "Invalid API key",
                type="authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
