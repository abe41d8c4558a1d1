"""The base models every layer's schemas derive from, so that what a model does with a field
it does not know is said once per kind."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A configuration file's model (a card, a fleet, tiers): an unknown key is an error, and
    what was loaded does not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestModel(BaseModel):
    """An API request's model: a key the API does not define is left out, as DeepInfra does
    (clients send their own extras); a field it defines and cannot honour is refused by name."""

    model_config = ConfigDict(extra="ignore")


class ResponseModel(BaseModel):
    """An API answer's model: exactly its declared fields."""

    model_config = ConfigDict(extra="forbid")
