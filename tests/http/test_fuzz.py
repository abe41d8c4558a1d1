"""Fuzz the API with schemathesis against the service's own OpenAPI document, on the real
engine: no request gets a 5xx, and every answer matches what the document promises.

Two passes: one as generated (the model a free string: routing's 404s and the 422s), and one
with the served model pinned, so that well-formed cases reach the engine; there a `webhook` the
generator makes up is pointed at a receiver of the test's own on the loopback (never a host
the generator names)."""

from __future__ import annotations

import threading

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ..helpers import MODEL, Receiver, engine_finished

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


def _pin(case: schemathesis.Case, webhook: str) -> None:
    """The served model in the path or the body; a generated webhook replaced by ours."""
    if "model" in (case.path_parameters or {}):
        case.path_parameters["model"] = MODEL
    if isinstance(case.body, dict):
        if "messages" in case.body or "prompt" in case.body:
            case.body["model"] = MODEL
        if "webhook" in case.body:
            case.body["webhook"] = webhook


def _engine_requests(base_url: str) -> float:
    return engine_finished(httpx.get(f"{base_url}/metrics").text)


def test_api_holds_up_to_fuzzing(base_url: str) -> None:
    _fuzz(base_url, pin=None)


def test_api_holds_up_to_fuzzing_that_reaches_the_engine(base_url: str) -> None:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        before = _engine_requests(base_url)
        _fuzz(base_url, pin=receiver.url)
        reached = _engine_requests(base_url) - before
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    print(f"fuzz: {reached:.0f} requests reached the engine; {receiver.attempts} webhook posts")
    # Most well-formed cases run: a fuzz that only exercised the 4xx paths would count 0.
    assert reached >= EXAMPLES_PER_OPERATION


def _fuzz(base_url: str, pin: str | None) -> None:
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
            if pin is not None:
                _pin(case, pin)
            # Not schemathesis' "valid data is accepted" check: the document states DeepInfra's
            # ranges, and a card may be stricter (the tiny card's n <= 3), which is a 422 by design.
            case.call_and_validate(checks=CHECKS)

        fuzz()
