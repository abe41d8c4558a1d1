"""A batch line's result as the output and error files hold it, in OpenAI's shape: the
answer the same request gets online, or its error, or why it never ran."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import orjson

from ..engine.call import Outcome
from ..store.claims import LineResult


def line_id() -> str:
    return f"batch_req_{secrets.token_hex(12)}"


def result_line(custom_id: str, outcome: Outcome, error_body: Callable[[Any], Any]) -> LineResult:
    """A line's result in OpenAI's shape: its answer in the output file, its error (with the
    status and body the same request gets online) in the error file; its tokens and cost."""
    record = outcome.record
    usage = record.usage
    if (
        outcome.error is None
        and outcome.answer is not None
        and not isinstance(outcome.answer, bytes)
    ):
        body: Any = outcome.answer.model_dump(mode="json")
        state = "done"
    else:
        body = error_body(outcome.error) if outcome.error is not None else None
        state = "failed"
    line = {
        # Named after the request it ran as: `POST /v1/request-costs` knows it by this id too.
        "id": f"batch_req_{record.request_id}",
        "custom_id": custom_id,
        "response": {"status_code": outcome.status, "request_id": record.request_id, "body": body},
        "error": None,
    }
    return LineResult(
        state,
        orjson.dumps(line).decode(),
        usage.prompt_tokens,
        usage.cached_tokens,
        usage.completion_tokens,
        usage.estimated_cost,
    )


def unrun_line(state: str, custom_id: str) -> str:
    """The error file's line of a line that never ran: cancelled, or expired."""
    code, message = (
        ("batch_cancelled", "The batch was cancelled before this request ran")
        if state == "cancelled"
        else ("batch_expired", "The batch expired before this request ran")
    )
    return orjson.dumps(
        {
            "id": line_id(),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    ).decode()
