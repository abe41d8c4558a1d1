"""A batch's input file, checked line by line before any of it runs: what is wrong and where,
or the lines to run.

Each line is `{"custom_id", "method": "POST", "url", "body"}`: the url the batch's endpoint,
the custom_id unique, the body one the route accepts (checked by the route's own schema,
`LineCheck`), not streamed, without a webhook, and naming the same model as every other line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..store.batches import NewLine
from .schema import BatchError

MAX_LINES = 50_000
MAX_ERRORS = 1000  # listed in the batch's `errors`; the count says how many more there were
PREFIX_CHARS = 64  # lines whose prompts start alike run close together (the prefix cache)


class LineRefused(Exception):
    """A body the route's schema refuses."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


# (endpoint, body) -> the model it names and the card's model that serves it (itself, or a
# LoRA adapter's base: its lines run where the base runs); LineRefused naming the field
# otherwise.
LineCheck = Callable[[str, dict[str, Any]], tuple[str, str]]


@dataclass
class Checked:
    """What checking found: the model every line names, and what is wrong where."""

    errors: list[BatchError] = field(default_factory=list)
    more_errors: int = 0
    model: str | None = None

    def refuse(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(BatchError(code=code, message=message, param=param, line=line))
        else:
            self.more_errors += 1


def check_lines(
    raw: Iterable[tuple[int, bytes]], endpoint: str, check: LineCheck, out: Checked
) -> Iterator[NewLine]:
    """The lines to run, as they are read (a file of any size is never held whole), each
    checked; what is wrong goes to `out`, and the batch may run only if nothing is."""
    seen: set[str] = set()
    count = 0
    for number, text in raw:
        if not text.strip():
            continue  # a blank line (the last newline)
        count += 1
        if count > MAX_LINES:
            out.refuse(
                None,
                "too_many_requests",
                f"The input file has more than {MAX_LINES} requests",
                "input_file_id",
            )
            break
        line = _check_line(out, number, text, endpoint, check, seen)
        if line is not None:
            yield line
    if count == 0:
        out.refuse(None, "empty_file", "The input file has no requests", "input_file_id")


def _check_line(
    out: Checked, n: int, text: bytes, endpoint: str, check: LineCheck, seen: set[str]
) -> NewLine | None:
    try:
        item = orjson.loads(text)
    except orjson.JSONDecodeError:
        out.refuse(n, "invalid_json_line", f"Line {n} is not valid JSON")
        return None
    if not isinstance(item, dict):
        out.refuse(n, "invalid_json_line", f"Line {n} is not a JSON object")
        return None
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        out.refuse(n, "missing_required_parameter", "custom_id: a non-empty string", "custom_id")
        return None
    if item.get("method") != "POST":
        out.refuse(n, "invalid_method", "method: must be POST", "method")
        return None
    if item.get("url") != endpoint:
        out.refuse(n, "invalid_url", f"url: must be the batch's endpoint, {endpoint}", "url")
        return None
    body = item.get("body")
    if not isinstance(body, dict):
        out.refuse(n, "missing_required_parameter", "body: a JSON object", "body")
        return None
    if custom_id in seen:
        out.refuse(n, "duplicate_custom_id", f"custom_id: {custom_id!r} is repeated", "custom_id")
        return None
    seen.add(custom_id)
    if body.get("stream"):
        out.refuse(n, "invalid_request", "body.stream: not allowed in a batch", "body.stream")
        return None
    if body.get("webhook") is not None:
        out.refuse(n, "invalid_request", "body.webhook: not allowed in a batch", "body.webhook")
        return None
    if body.get("service_tier") not in (None, "default"):
        out.refuse(
            n,
            "invalid_request",
            "body.service_tier: a batch line runs at the batch price; leave it out",
            "body.service_tier",
        )
        return None
    try:
        model, base = check(endpoint, body)
    except LineRefused as exc:
        out.refuse(n, "invalid_request", exc.message, exc.param)
        return None
    if out.model is None:
        out.model = model
    elif model != out.model:
        out.refuse(
            n,
            "mismatched_model",
            f"body.model: {model!r}; every line of a batch names the same model ({out.model!r})",
            "body.model",
        )
        return None
    prompt = body.get("messages", body.get("prompt"))
    key = orjson.dumps(prompt).decode()[:PREFIX_CHARS]
    return NewLine(n, base, custom_id, orjson.dumps(body).decode(), key)
