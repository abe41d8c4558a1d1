"""Request fields every API that takes them validates alike: prompt-caching marks and the JSON
Schema of a tool's arguments."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import jsonschema
from pydantic import AfterValidator, Field, field_validator

from ..config.models import StrictModel


class CacheControl(StrictModel):
    """A prompt-caching mark (Anthropic's, which DeepInfra accepts on chat messages, content
    parts and tools, and the Messages API on its blocks and tools). Caching here is automatic:
    every prompt's prefix is cached while memory allows, marked or not, so the mark is accepted
    and changes nothing. A retention time (`ttl`) is refused: the engine evicts the least
    recently used blocks when it needs room, and no time can be promised."""

    type: Literal["ephemeral"]
    ttl: Any = None

    @field_validator("ttl")
    @classmethod
    def _no_retention(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(
                "a cache retention time cannot be guaranteed (cached prefixes stay while memory "
                "allows); leave ttl out"
            )


# Left out of every dump: what the chat template renders must not change with it.
CacheMark = Annotated[CacheControl | None, Field(None, exclude=True)]


def _arguments_schema(value: dict[str, Any]) -> dict[str, Any]:
    try:
        jsonschema.validators.validator_for(value).check_schema(value)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON schema: {exc.message}") from exc
    if value.get("type", "object") != "object":
        raise ValueError("must be a JSON schema of type object (the arguments object)")
    return value


# A tool's arguments schema, checked as a JSON Schema of type object: a broken schema is a 422
# naming the tool, not an error from the grammar compiler when a call is forced.
ArgumentsSchema = Annotated[dict[str, Any], AfterValidator(_arguments_schema)]
