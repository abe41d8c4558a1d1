"""How a batch's line is checked when the batch is made: by the schema of the route its
endpoint names, and against the models behind this base URL, as the same request would be
online (the engine's own checks, such as a prompt longer than the context, come when it
runs, as its line's error)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from ..batch.input import LineCheck, LineRefused
from ..config.catalog import Catalog
from ..engine.errors import APIError, not_found, validation_error
from .families import served_as
from .routes import TABLE, Route

BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")


def endpoint_routes() -> dict[str, Route]:
    """The route each endpoint a batch may name runs its lines on."""
    routes = {}
    for endpoint in BATCH_ENDPOINTS:
        route = TABLE.classify("POST", endpoint)
        assert route is not None and route.body is not None
        routes[endpoint] = route
    return routes


def native_route() -> Route:
    """The route a webhook job runs on again."""
    route = next(r for r in TABLE.routes if r.family.name == "native" and r.method == "POST")
    return route


def line_check(catalog: Catalog) -> LineCheck:
    routes = endpoint_routes()
    cards = {card.name: card for card in catalog.cards}

    def check(endpoint: str, body: dict[str, Any]) -> str:
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
        try:
            card = cards.get(model.partition(":")[0])
            if card is None:
                raise not_found(model)
            return served_as(card, model, route.family).name
        except APIError as exc:
            raise LineRefused(f"body.model: {exc.message}", "body.model") from None

    return check
