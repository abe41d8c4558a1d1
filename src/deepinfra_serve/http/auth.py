"""API keys: `Authorization: Bearer <key>` (or the route's other key header), checked in
constant time, and the tenant each key is.

Keys come from DEEPINFRA_SERVE_API_KEYS (comma-separated) and/or a file with one key per line
(DEEPINFRA_SERVE_API_KEYS_FILE, the shape of a mounted Kubernetes Secret). An entry may carry
options after the key: `sk-team-a rate_limit=50` gives that key its own limit of concurrent
requests. No key configured means the API is open; the server warns about it at start. Keys
are never logged: what leaves this module is a tenant, known by its index and digests.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..config.served import Tenant
from ..engine.errors import APIError

log = logging.getLogger(__name__)

_OPTIONS = ("rate_limit",)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    key: str
    rate_limit: int | None = None  # None: the server's default


def parse_entry(text: str) -> KeyEntry:
    """`<key> [rate_limit=<n>]`; a bad option raises ValueError naming it (never the key)."""
    key, *options = text.split()
    limit = None
    for option in options:
        name, _, value = option.partition("=")
        if name not in _OPTIONS:
            raise ValueError(f"unknown API key option {name!r} (known: {', '.join(_OPTIONS)})")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        limit = int(value)
    return KeyEntry(key, limit)


def read_entries(inline: str, file: Path | None) -> list[KeyEntry]:
    """The configured keys, inline first, then the file's lines (# starts a comment)."""
    lines = [part.strip() for part in inline.split(",")]
    if file is not None:
        lines += [line.strip() for line in file.read_text().splitlines()]
    entries = [parse_entry(line) for line in lines if line and not line.startswith("#")]
    if len({e.key for e in entries}) != len(entries):
        raise ValueError("an API key is listed twice")
    return entries


def key_digest(key: str) -> str:
    """sha256 of the key: how the front door and the logs may know a key without holding it."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, entries: list[KeyEntry], default_rate_limit: int = 200) -> None:
        self._keys = tuple(e.key.encode() for e in entries)
        self.tenants = tuple(
            Tenant(i, e.rate_limit or default_rate_limit, cache_salt(e.key), key_digest(e.key))
            for i, e in enumerate(entries)
        )

    @classmethod
    def load(cls, inline: str, file: Path | None, default_rate_limit: int = 200) -> ApiKeys:
        return cls(read_entries(inline, file), default_rate_limit)

    @property
    def required(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def by_owner(self, owner: str) -> Tenant | None:
        """The tenant whose key's digest is `owner` (what it made in the store), if its key is
        still configured."""
        return next((t for t in self.tenants if t.owner == owner), None)

    def tenant(self, given: str | None) -> Tenant | None:
        """The tenant whose key `given` is, or None."""
        if not given:
            return None
        token = given.encode()
        # Compare against every key, so the time taken says nothing about which one matched.
        found = -1
        for i, key in enumerate(self._keys):
            if hmac.compare_digest(key, token):
                found = i
        return self.tenants[found] if found >= 0 else None

    def check(
        self, headers: Iterable[tuple[bytes, bytes]], names: tuple[str, ...]
    ) -> Tenant | None:
        """The caller, or None when no keys are configured; 401 unless one of the headers
        `names` (the route's, in the route table) carries a key that matches.
        `Authorization` carries it as a bearer token; any other header is the key itself."""
        if not self._keys:
            return None
        wanted = {name.encode(): name for name in names}
        found = next(((wanted[k], v) for k, v in headers if k in wanted), None)
        tenant = None if found is None else self.tenant(_key(*found))
        if tenant is not None:
            return tenant
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
