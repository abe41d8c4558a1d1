"""What a request is served as and for whom, resolved once by the dispatcher and kept on the
request's record: the model it named (a card, at a version, priced), and the API key's tenant.

Services read these from the record they are handed, so a request run without an HTTP
connection (a webhook job, a batch line) is the same value as one a client waits for.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cards import ModelCard
from .pricing import Pricing


@dataclass(frozen=True, slots=True)
class Served:
    """The model a request asked for, as this server serves it."""

    name: str  # the name answers echo (Owner/Name, without a version)
    version: str | None  # the version it asked for, when it named one
    card: ModelCard
    pricing: Pricing


@dataclass(frozen=True, slots=True)
class Tenant:
    """One API key, as the rest of the server knows it (never the key itself)."""

    index: int  # its place in the configuration: the same in every API process
    rate_limit: int  # concurrent requests to this model
    cache_salt: str  # its part of the prefix cache (`cache_salt`)
    # What it owns in the store (files, batches) is kept under this digest of the key, the same
    # whatever the key's place in the configuration.
    owner: str
