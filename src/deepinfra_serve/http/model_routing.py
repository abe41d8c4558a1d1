"""Which model a request names, and whether its card offers the API being called."""

from __future__ import annotations

from ..config.cards import Api, ModelCard
from ..engine.errors import APIError
from .routes import served_through


def not_found(model: str) -> APIError:
    return APIError(
        404, f"The model `{model}` does not exist", param="model", code="model_not_found"
    )


def check_served(card: ModelCard, model: str, api: Api) -> None:
    """404 for a model this server does not serve; 400 for an API its card does not offer."""
    if model != card.name:
        raise not_found(model)
    if api not in card.apis:
        routes = " and ".join(served_through(a, card.name) for a in card.apis)
        raise APIError(
            400,
            f"The model `{model}` is served through {routes} only",
            param="model",
            code="api_not_supported",
        )
