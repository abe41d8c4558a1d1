"""What the native API writes as bytes or hands to a webhook, held to the models that document
it (which refuse keys they do not declare): token events are checked in every streaming test,
here the webhook bodies and the error event."""

from __future__ import annotations

import time

import httpx

from deepinfra_serve.engine.errors import engine_dead, timed_out
from deepinfra_serve.native.errors import NativeError, stream_error
from deepinfra_serve.native.schema import InferenceResponse
from deepinfra_serve.native.service import _failed

from ..helpers import INFERENCE, receiving


def test_webhook_bodies_match_the_response_model(client: httpx.Client) -> None:
    with receiving() as receiver:
        job = {"input": "Hello", "max_new_tokens": 3, "webhook": receiver.url}
        queued = client.post(INFERENCE, json=job)
        assert queued.status_code == 200
        InferenceResponse.model_validate_json(queued.content)
        receiver.wait_for(lambda: receiver.bodies)
    [delivered] = receiver.bodies
    assert InferenceResponse.model_validate(delivered).inference_status.status == "succeeded"
    failed = InferenceResponse.model_validate_json(_failed("rid", 7, time.monotonic(), "why"))
    assert (failed.inference_status.status, failed.error) == ("failed", "why")


def test_an_error_event_matches_the_error_model() -> None:
    for err in (timed_out(0.5), engine_dead()):
        frame = stream_error(err).decode()
        assert frame.startswith("data: ") and frame.endswith("\n\n")
        assert NativeError.model_validate_json(frame[6:-2]).error == err.message
