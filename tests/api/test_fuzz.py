"""Fuzz the API with schemathesis against the service's own OpenAPI document, on the real
engine: no request gets a 5xx, and every answer matches what the document promises."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES_PER_OPERATION = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _short(case: schemathesis.Case) -> None:
    # Long generations are not what this looks for; keep valid requests quick.
    if isinstance(case.body, dict):
        key = "max_new_tokens" if "input" in case.body else "max_tokens"
        case.body.setdefault(key, 8)


def test_api_holds_up_to_fuzzing(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    # The generation and model routes; the probes and /metrics are plain operations.
    operations = [r.ok() for r in schema.include(path_regex="^/v1/").get_all_operations()]
    assert len(operations) >= 5
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: schemathesis.Case) -> None:
            _short(case)
            # Not schemathesis' "valid data is accepted" check: the document states DeepInfra's
            # ranges, and a card may be stricter (the tiny card's n <= 3), which is a 422 by design.
            case.call_and_validate(checks=CHECKS)

        fuzz()
