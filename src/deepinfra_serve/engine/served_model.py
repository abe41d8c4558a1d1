"""A card and the vLLM engine that runs it, shared by every API: the handle through which
requests reach the engine, and through which the engine is watched and stopped.

Prompt rendering is `prompts`, one request's life `generation`; API formatting lives in the API
packages, not here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any

from ..config.cards import ModelCard
from ..config.served import ServedAdapter
from . import vllm_seam
from .progress import EngineProgress
from .prompts import Prompts

if TYPE_CHECKING:
    from .function_calling.calls import FunctionCalling

log = logging.getLogger(__name__)


class ServedModel:
    def __init__(
        self,
        card: ModelCard,
        engine: Any,
        functions: FunctionCalling | None = None,
        progress: EngineProgress | None = None,
    ) -> None:
        self.card = card
        self.engine = engine
        self.functions = functions  # None: the card has no tool format
        self.progress = progress or EngineProgress()  # fed by the engine's stat loggers
        self.prompts: Prompts = None  # type: ignore[assignment]  # set once the engine runs
        self._loras: dict[int, Any] = {}  # the engine's `LoRARequest` per adapter id

    @classmethod
    def start(cls, card: ModelCard, make_engine: Callable[[list[Any]], Any]) -> ServedModel:
        """`make_engine(stat_loggers)` builds the `AsyncLLM`: over an engine core of its own
        (`from_engine_args`) or as one of several clients of a shared one."""
        from .function_calling.calls import FunctionCalling

        progress = EngineProgress()
        # No local keeps the engine: something below may keep this frame (a stored traceback
        # or frame), and `shutdown` must be able to let go of the engine.
        model = cls(card, make_engine([progress.stat_logger]), None, progress)
        # vLLM reads its settings from os.environ on every access, some for every token of
        # every request (its per-token stats); its engine core caches them once started, and
        # so does this process, whose environment is settled by now.
        from .vllm_seam import enable_envs_cache

        enable_envs_cache()
        try:
            model.functions = FunctionCalling.of(card, model.engine)
            model.prompts = Prompts(card, model.engine)
        except Exception:
            model.shutdown()
            raise
        return model

    def generate(
        self,
        prompt: dict[str, Any],
        params: Any,
        request_id: str,
        priority: int = 0,
        adapter: ServedAdapter | None = None,
        trace_headers: dict[str, str] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """The engine's outputs; `priority` (lower first) orders its waiting queue (vLLM's
        priority scheduling); `adapter`: the LoRA adapter applied (loaded by the engine's
        workers on its first request, kept while it is among the most recently used);
        `trace_headers`: the span the engine's own span goes under, when tracing."""
        lora = None if adapter is None else self.lora(adapter)
        return self.engine.generate(
            prompt,
            params,
            request_id,
            priority=priority,
            lora_request=lora,
            trace_headers=trace_headers,
        )

    def lora(self, adapter: ServedAdapter) -> Any:
        request = self._loras.get(adapter.lora_id)
        if request is None or request.lora_path != adapter.path:
            from vllm.lora.request import LoRARequest

            request = LoRARequest(adapter.name, adapter.lora_id, adapter.path)
            self._loras[adapter.lora_id] = request
        return request

    async def add_adapter(self, adapter: ServedAdapter) -> None:
        """Load the adapter in the engine now: what cannot be loaded raises here, before
        any request names it."""
        await self.engine.add_lora(self.lora(adapter))

    async def remove_adapter(self, adapter: ServedAdapter) -> None:
        self._loras.pop(adapter.lora_id, None)
        await self.engine.remove_lora(adapter.lora_id)

    @property
    def has_work(self) -> bool:
        """Requests the engine has accepted and not finished (running or waiting)."""
        return self.engine.get_num_unfinished_requests() > 0

    def fail_in_flight(self, reason: str) -> None:
        """End every request waiting on the engine with an engine-dead error (what vLLM does
        itself when the engine core dies), for an engine that hangs instead."""
        vllm_seam.fail_in_flight(self.engine, reason)

    @property
    def errored(self) -> bool:
        engine = getattr(self, "engine", None)  # None once shut down: stopped, not dead
        return engine is not None and bool(engine.errored)

    @staticmethod
    def own_engine(engine_args: Any) -> Callable[[list[Any]], Any]:
        """An engine over a core of its own, for `start`; the core lives and dies with the
        thread that runs this (`core_process`)."""

        def make(stat_loggers: list[Any]) -> Any:
            from vllm.v1.engine.async_llm import AsyncLLM

            from .core_process import tied_engine_cores

            with tied_engine_cores():
                return AsyncLLM.from_engine_args(engine_args, stat_loggers=stat_loggers)

        return make

    def shutdown(self) -> None:
        """Stop the engine and let go of it. The thread pool that started it can keep this
        object until interpreter exit, where AsyncLLM.__del__ would run against torn-down
        modules and print a traceback; dropped here, it is collected while they are whole."""
        self.engine.shutdown()
        del self.engine
