"""How a batch's line is checked when the batch is made: by the schema of the route its
endpoint names, and against the models behind this base URL, as the same request would be
online (the engine's own checks, such as a prompt longer than the context, come when it
runs, as its line's error)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from ..batch.input import LineCheck, LineRefused
from ..config.cards import ModelCard
from ..config.catalog import Catalog
from ..config.served import ServedAdapter
from ..engine.errors import APIError, not_found, validation_error
from ..lora.registry import Adapters
from ..store import adapters as stored
from .families import served_as
from .route_table import Route
from .routes import TABLE

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")


def endpoint_routes() -> dict[str, Route]:
    """The route each endpoint a batch may name runs its lines on."""
    routes = {}
    for endpoint in BATCH_ENDPOINTS:
        route = TABLE.classify("POST", endpoint)
        assert route is not None and route.body is not None
        routes[endpoint] = route
    return routes


def _fleet_adapter(card: ModelCard, name: str) -> ServedAdapter:
    """Another card's adapter, as far as checking a line names it."""
    assert card.lora is not None
    adapter = next(a for a in card.lora.adapters if a.name == name)
    return ServedAdapter(
        name, 0, "", card.pricing.scaled(adapter.price_multiplier), version=adapter.served_version
    )


def native_route() -> Route:
    """The route a webhook job runs on again."""
    route = next(r for r in TABLE.routes if r.family.name == "native" and r.method == "POST")
    return route


def line_check(catalog: Catalog, adapters: Adapters) -> LineCheck:
    """A line's body checked as its route's schema takes it, naming a model of the fleet or
    a LoRA adapter: the cards' own, or one added at run time to this server's model (looked
    up in the store; the check runs on the store's threads)."""
    routes = endpoint_routes()
    cards = {card.name: card for card in catalog.cards}
    card_adapters = {
        adapter.name: (card, adapter.name)
        for card in catalog.cards
        for adapter in ([] if card.lora is None else card.lora.adapters)
    }

    def check(endpoint: str, body: dict[str, Any]) -> tuple[str, str]:
        route = routes[endpoint]
        assert route.body is not None
        try:
            request = route.body.model_validate_json(orjson.dumps(body))
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            # Named as the line's fields: body.temperature.
            err = validation_error([{**e, "loc": ("body", "body", *e["loc"])} for e in errors])
            raise LineRefused(err.message, err.param) from None
        model: str = request.model  # type: ignore[attr-defined]  # both routes' bodies have one
        name = model.partition(":")[0]
        try:
            card = cards.get(name)
            adapter = None
            if card is None and name in card_adapters:
                card, _ = card_adapters[name]
                adapter = adapters.fixed.get(name) or _fleet_adapter(card, name)
            elif card is None and adapters.store is not None:
                row = stored.by_name(adapters.store, name)
                if row is not None and row.base == adapters.card.name:
                    card, adapter = adapters.card, adapters.served(row)
            if card is None:
                raise not_found(model)
            return served_as(card, model, route.family, adapter).name, card.name
        except APIError as exc:
            raise LineRefused(f"body.model: {exc.message}", "body.model") from None

    return check
