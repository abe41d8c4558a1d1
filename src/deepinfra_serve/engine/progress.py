"""The engine's heartbeat: when it last returned outputs, for the watchdog."""

from __future__ import annotations

import time
from typing import Any


class EngineProgress:
    """vLLM calls its stat loggers each time a batch of outputs arrives from the engine core, so
    a logger of our own is the cheapest beat: one clock read per engine step, none per token."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def stat_logger(self, vllm_config: Any, engine_index: int = 0) -> Any:
        """A vLLM `StatLoggerFactory`."""
        from .vllm_seam import StatLoggerBase

        progress = self

        class ProgressLogger(StatLoggerBase):
            def __init__(self) -> None:
                pass

            def record(self, *args: Any, **kwargs: Any) -> None:
                progress.last = time.monotonic()

            def log_engine_initialized(self) -> None:
                pass

        return ProgressLogger()
