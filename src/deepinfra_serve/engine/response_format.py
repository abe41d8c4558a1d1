"""DeepInfra's `response_format`, the same in both APIs' schemas, and the vLLM
structured-output constraint it becomes."""

from __future__ import annotations

import re
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, Field, model_validator


class ResponseFormat(BaseModel):
    """DeepInfra's response_format: text, json_object, json_schema or regex."""

    type: Literal["text", "json_object", "json_schema", "regex"] = "text"
    json_schema: dict[str, Any] | None = Field(
        None, description="The schema, or OpenAI's {name, schema} wrapper around it."
    )
    regex: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> ResponseFormat:
        # Checked here so that a broken schema or pattern is a 422 naming the field, not an
        # error from deep inside the grammar compiler.
        if self.type == "json_schema":
            if not self.json_schema:
                raise ValueError("json_schema is required when type is 'json_schema'")
            schema = self.json_schema.get("schema", self.json_schema)
            try:
                jsonschema.validators.validator_for(schema).check_schema(schema)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"json_schema is not a valid JSON schema: {exc.message}") from exc
        if self.type == "regex":
            if not self.regex:
                raise ValueError("regex is required when type is 'regex'")
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from exc
        return self

    def structured_outputs(self) -> Any:
        """vLLM structured-output constraints, or None for free text (JSON comes compact: the
        engine is configured so, see `engine_args`)."""
        if self.type == "text":
            return None
        from vllm.sampling_params import StructuredOutputsParams

        if self.type == "json_object":
            return StructuredOutputsParams(json_object=True)
        if self.type == "json_schema":
            assert self.json_schema is not None
            schema = self.json_schema.get("schema", self.json_schema)
            return StructuredOutputsParams(json=schema)
        return StructuredOutputsParams(regex=self.regex)


def structured_outputs(response_format: ResponseFormat | None) -> Any:
    return response_format.structured_outputs() if response_format is not None else None
