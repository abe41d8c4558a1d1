"""Logging set-up: JSON lines for this service's loggers, each carrying the request id; and the
access line, written on a shorter path of its own."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, TextIO

import orjson
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter

from .record import current_request_id

ACCESS_LOGGER = "deepinfra_serve.access"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class AccessLog:
    """One JSON line per request, in the shape every other line has (`time`, `level`,
    `logger`, `pid`, `message`, then the line's own fields).

    The stdlib's path (the caller's frame looked up, a `LogRecord`, python-json-logger merging
    the record's attributes) cost about a fifth of this service's own work per request; the
    fields are known in full, so orjson writes the line, about a tenth of that (a test holds it
    to the formatter's shape). Logging still decides: nothing is written unless the access
    logger is enabled for INFO, and the line goes to the handler `configure_logging` set up,
    under its lock. Without that handler (an app built in-process, without
    `configure_logging`), the line goes through logging as any other."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)
        self.handler: logging.StreamHandler[Any] | None = None
        self._second = -1
        self._stamp = ""

    def write(self, fields: dict[str, Any]) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = self.handler
        if handler is None:
            logger.info("access", extra=fields)
            return
        head = {
            "time": self._asctime(time.time()),
            "level": "INFO",
            "logger": ACCESS_LOGGER,
            "pid": os.getpid(),
            "message": "access",
        }
        line = orjson.dumps(head | fields, option=orjson.OPT_APPEND_NEWLINE).decode()
        with handler.lock:  # type: ignore[union-attr]  # a StreamHandler always has one
            handler.stream.write(line)
            handler.stream.flush()

    def _asctime(self, now: float) -> str:
        """logging's default `asctime` ("2026-12-02 04:49:09,180"), the date part formatted
        once a second."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((now - second) * 1000):03d}"


access_log = AccessLog()


def configure_logging(level: str, stream: TextIO = sys.stdout) -> None:
    """Our loggers write JSON to stdout (a command whose output is its answer: to stderr);
    vLLM and uvicorn keep their own formats. orjson writes the lines: the stdlib encoder took
    half of a line's cost."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        OrjsonFormatter(
            "{asctime}{levelname}{name}{process}{message}",
            style="{",
            rename_fields={
                "asctime": "time",
                "levelname": "level",
                "name": "logger",
                "process": "pid",  # which API process, when there are several
            },
            # vLLM's log record factory puts its process name on every record, ours too.
            reserved_attrs=[*RESERVED_ATTRS, "vllm_process_name"],
        )
    )
    handler.addFilter(_RequestIdFilter())
    ours = logging.getLogger("deepinfra_serve")
    ours.handlers[:] = [handler]
    ours.setLevel(level.upper())
    ours.propagate = False
    access_log.handler = handler
