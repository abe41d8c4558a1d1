"""vLLM's undocumented interfaces this service relies on, all reached through `vllm_seam`: each
is where the seam says, with the shape the service uses. An upgrade that moves or reshapes one
fails here, by name, rather than in a request."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from deepinfra_serve.engine import vllm_seam


@pytest.mark.parametrize("name", sorted(vllm_seam.WHERE))
def test_each_name_is_where_the_seam_says(name: str) -> None:
    assert getattr(vllm_seam, name) is not None


def test_no_name_outside_the_table_is_made_up() -> None:
    with pytest.raises(AttributeError, match="has no 'SamplingParams'"):
        _ = vllm_seam.SamplingParams


def _parameters(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_shapes_the_service_relies_on() -> None:
    # core_process swaps the engine core's entry point, a static method, for its own wrapper.
    assert isinstance(vllm_seam.EngineCoreProc.__dict__["run_engine_core"], staticmethod)
    # progress subclasses the stat logger and implements its abstract methods.
    abstract = vllm_seam.StatLoggerBase.__abstractmethods__
    assert abstract <= {"__init__", "record", "log_engine_initialized"}
    # fail_in_flight: the engine's output processor fails every request it tracks.
    from vllm.v1.engine.output_processor import OutputProcessor

    assert _parameters(OutputProcessor.propagate_error)[1:] == ["e"]
    # api_processes: an engine core launched for several API processes.
    assert _parameters(vllm_seam.bind_engine_zmq_listeners)[:2] == [
        "vllm_config",
        "num_api_servers",
    ]
    assert _parameters(vllm_seam.launch_core_engines)[:4] == [
        "vllm_config",
        "executor_class",
        "log_stats",
        "addresses",
    ]
    manager = set(_parameters(vllm_seam.APIServerProcessManager.__init__))
    assert {
        "listen_address",
        "sock",
        "args",
        "num_servers",
        "input_listeners",
        "output_listeners",
        "target_server_fn",
    } <= manager
    from vllm.engine.arg_utils import AsyncEngineArgs

    fields = AsyncEngineArgs.__dataclass_fields__
    assert "_api_process_count" in fields and "_api_process_rank" in fields
    # function calling: vLLM's parser registry, a parser's hooks, and the request they read.
    assert callable(vllm_seam.ParserManager.get_parser)
    for hook in ("adjust_request", "extract_tool_calls", "extract_tool_calls_streaming"):
        assert callable(getattr(vllm_seam.ToolParser, hook)), hook
    assert "tools" in vllm_seam.ChatCompletionRequest.model_fields
    # prompts: the renderer's parameter objects.
    assert "chat_template" in _parameters(vllm_seam.ChatParams)
    assert "add_special_tokens" in _parameters(vllm_seam.TokenizeParams)
    # the envs cache and the collector's freeze take nothing.
    assert _parameters(vllm_seam.enable_envs_cache) == []
    assert _parameters(vllm_seam.freeze_gc_heap) == []
