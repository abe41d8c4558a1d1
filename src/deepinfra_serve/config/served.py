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
class ServedAdapter:
    """A LoRA adapter of the card's model, as the engine knows it (vLLM's `LoRARequest`)."""

    name: str  # Owner/Name, the model name clients send
    lora_id: int  # the engine's id for it: unique per adapter, the same in every API process
    path: str  # its PEFT folder on this host
    pricing: Pricing  # the card's prices times the adapter's multiplier
    owner: str | None = None  # the key's digest that added it at run time; None: the card's
    version: str | None = None  # what `Owner/Name:VERSION` may name (a card's adapter)


@dataclass(frozen=True, slots=True)
class Served:
    """The model a request asked for, as this server serves it: the card's model, or one of
    its LoRA adapters (priced at the adapter's multiple of the card's prices)."""

    name: str  # the name answers echo (Owner/Name, without a version)
    version: str | None  # the version it asked for, when it named one
    card: ModelCard
    pricing: Pricing
    adapter: ServedAdapter | None = None

    @property
    def base(self) -> str:
        """The card's model, which an adapter's traffic counts against."""
        return self.card.name


@dataclass(frozen=True, slots=True)
class Tenant:
    """One API key, as the rest of the server knows it (never the key itself)."""

    index: int  # its place in the configuration: the same in every API process
    rate_limit: int  # concurrent requests to this model
    cache_salt: str  # its part of the prefix cache (`cache_salt`)
    # What it owns in the store (files, batches) is kept under this digest of the key, the same
    # whatever the key's place in the configuration.
    owner: str
