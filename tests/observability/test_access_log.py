"""The access line's own short path writes what the JSON formatter writes for any other line,
and logging still decides whether and where it goes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Iterator

import pytest

from deepinfra_serve.observability.logs import ACCESS_LOGGER, access_log, configure_logging

FIELDS = {
    "request_id": "abc",
    "model": "m",
    "api": "chat",
    "status": 200,
    "latency_ms": 12.5,
    "estimated_cost": 1.2e-6,
    "user": None,
    "content": {"output": ['say "hi"\n\u2028']},
}


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    ours = logging.getLogger("deepinfra_serve")
    saved = ours.handlers[:], ours.level, ours.propagate, access_log.handler
    configure_logging("info")
    out = io.StringIO()
    access_log.handler.setStream(out)  # type: ignore[union-attr]
    try:
        yield out
    finally:
        ours.handlers[:], ours.level, ours.propagate, access_log.handler = saved


def test_the_line_has_the_formatters_shape(stream: io.StringIO) -> None:
    access_log.write(FIELDS)
    logging.getLogger(ACCESS_LOGGER).info("access", extra=FIELDS)  # the formatter's own line
    ours, theirs = (json.loads(line) for line in stream.getvalue().rstrip("\n").split("\n"))
    assert list(ours) == list(theirs)  # the same keys in the same order
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", ours["time"])
    assert ours.pop("time")[:16] == theirs.pop("time")[:16]
    assert ours == theirs
    assert ours["pid"] == os.getpid() and ours["message"] == "access"


def test_logging_decides_whether_the_line_is_written(stream: io.StringIO) -> None:
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
    try:
        access_log.write(FIELDS)
    finally:
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET)
    assert stream.getvalue() == ""
    logging.getLogger("deepinfra_serve").setLevel(logging.ERROR)
    access_log.write(FIELDS)
    assert stream.getvalue() == ""


def test_without_the_json_handler_the_line_goes_through_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    saved = access_log.handler
    access_log.handler = None
    try:
        with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
            access_log.write(FIELDS)
    finally:
        access_log.handler = saved
    [record] = caplog.records
    assert record.getMessage() == "access" and record.request_id == "abc"  # type: ignore[attr-defined]
