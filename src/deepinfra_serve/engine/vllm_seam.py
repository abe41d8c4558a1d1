"""Every interface of vLLM this service uses that vLLM does not document as public: internal
modules, private attributes, the engine core's entry point. They live here and nowhere else,
so that an upgrade past the `vllm==0.32.0` pin is checked in one place, and a test
(`tests/engine/test_vllm_seam.py`) fails for each one that moved.

What vLLM documents (`SamplingParams`, `AsyncEngineArgs`, `AsyncLLM`, the structured-output
parameters, `vllm.exceptions`) is imported where it is used.

Names are imported on first use (`__getattr__`): vLLM is heavy, and the configuration and
command-line layers never need it.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it, in vLLM 0.32.
WHERE = {
    # The engine died: what its requests and its client raise.
    "EngineDeadError": "vllm.v1.engine.exceptions",
    # The engine core process's entry point (`core_process` wraps it, to tie it to its parent).
    "EngineCoreProc": "vllm.v1.engine.core",
    # Environment variables read once, after start-up (a lookup per read otherwise).
    "enable_envs_cache": "vllm.envs",
    # The stat-logger interface the engine calls every step (`progress`).
    "StatLoggerBase": "vllm.v1.metrics.loggers",
    # The chat template's renderer and its parameters (`prompts`, `plain_chat`).
    "ChatParams": "vllm.renderers.params",
    "TokenizeParams": "vllm.renderers.params",
    "resolve_chat_template": "vllm.renderers.hf",
    "resolve_chat_template_content_format": "vllm.renderers.hf",
    # Function calling: vLLM's tool parsers, their registry and the protocol they speak.
    "ParserManager": "vllm.parser.parser_manager",
    "ToolParser": "vllm.tool_parsers.abstract_tool_parser",
    "ToolParserManager": "vllm.tool_parsers.abstract_tool_parser",
    "ChatCompletionRequest": "vllm.entrypoints.openai.chat_completion.protocol",
    "DeltaFunctionCall": "vllm.entrypoints.generate.base.protocol",
    "DeltaMessage": "vllm.entrypoints.generate.base.protocol",
    "DeltaToolCall": "vllm.entrypoints.generate.base.protocol",
    "ExtractedToolCallInformation": "vllm.entrypoints.generate.base.protocol",
    "FunctionCall": "vllm.entrypoints.generate.base.protocol",
    "ToolCall": "vllm.entrypoints.generate.base.protocol",
    "make_tool_call_id": "vllm.entrypoints.generate.base.protocol",
    # Which device this machine has.
    "current_platform": "vllm.platforms",
    # Several API processes over one engine core (`http.api_processes`).
    "UsageContext": "vllm.usage.usage_lib",
    "bind_engine_zmq_listeners": "vllm.v1.engine.utils",
    "launch_core_engines": "vllm.v1.engine.utils",
    "Executor": "vllm.v1.executor",
    "APIServerProcessManager": "vllm.v1.utils",
    # Freezes what start-up built out of the collector's way (vLLM's server does the same).
    "freeze_gc_heap": "vllm.utils.gc_utils",
}


def __getattr__(name: str) -> Any:
    module = WHERE.get(name)
    if module is None:
        raise AttributeError(f"{__name__} has no {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


def fail_in_flight(engine: Any, reason: str) -> None:
    """Fail every request of `engine` with EngineDeadError(reason): their streams end with an
    error rather than wait on an engine that will not answer (its output processor's)."""
    engine.output_processor.propagate_error(__getattr__("EngineDeadError")(reason))


def split_api_processes(engine_args: Any, count: int) -> None:
    """Engine arguments for one engine core serving `count` API processes, set the way vLLM's
    own `vllm serve --api-server-count` sets them (private fields of `AsyncEngineArgs`)."""
    engine_args._api_process_count = count
    engine_args._api_process_rank = -1
