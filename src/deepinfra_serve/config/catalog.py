"""What the routes that run no engine work answer from: the fleet's cards and this server's
limits. Built with the app, so these routes answer while the engine loads."""

from __future__ import annotations

from dataclasses import dataclass

from .cards import ModelCard


@dataclass(frozen=True, slots=True)
class Catalog:
    cards: list[ModelCard]  # this card and, behind a fleet's front door, the fleet's others
    created: int  # when this server started (the OpenAI list's `created`)
    rate_limit: int  # concurrent requests an open server (no keys) lets one caller hold

    @property
    def listed(self) -> list[ModelCard]:
        """The cards the OpenAI API lists: those served through it."""
        return [c for c in self.cards if "openai" in c.apis]
