from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.engine_args import (
    api_process_count,
    build_engine_args,
    gpu_engine_kwargs,
    plan_engine,
)
from deepinfra_serve.engine.weights import model_path

from ..helpers import CARDS

CACHE = Path("/cache")

# Every card's engine generates structured outputs as compact JSON.
COMPACT_JSON = {"backend": "xgrammar", "disable_any_whitespace": True}

# What the two generated test cards share.
TINY = {
    "dtype": "float32",
    "quantization": None,
    "tensor_parallel_size": 1,
    "max_model_len": 1024,
    "gpu_memory_utilization": 0.9,
    "kv_cache_dtype": "auto",
    "tokenizer_mode": "auto",
    "structured_outputs_config": COMPACT_JSON,
    # Every card: batch lines run behind online requests in the engine's queue.
    "scheduling_policy": "priority",
}

GPU_ARGS = {
    "mythomax-l2-13b-turbo.yaml": {
        "model": "Gryphe/MythoMax-L2-13b",
        "revision": "main",
        "served_model_name": ["Gryphe/MythoMax-L2-13b-turbo"],
        "dtype": "float16",
        "quantization": "fp8",
        "tensor_parallel_size": 2,
        "max_model_len": 4096,
        "gpu_memory_utilization": 0.9,
        "kv_cache_dtype": "auto",
        "tokenizer_mode": "auto",
        "structured_outputs_config": COMPACT_JSON,
        # The card sells service tiers: the engine queues by priority.
        "scheduling_policy": "priority",
        "enable_prefix_caching": True,
    },
    "codellama-70b-instruct.yaml": {
        "model": "codellama/CodeLlama-70b-Instruct-hf",
        "revision": "main",
        "served_model_name": ["codellama/CodeLlama-70b-Instruct-hf"],
        "dtype": "bfloat16",
        "quantization": "fp8",
        "tensor_parallel_size": 4,
        "max_model_len": 4096,
        "gpu_memory_utilization": 0.9,
        "kv_cache_dtype": "auto",
        "tokenizer_mode": "auto",
        "structured_outputs_config": COMPACT_JSON,
        # The card sells service tiers: the engine queues by priority.
        "scheduling_policy": "priority",
        "enable_prefix_caching": True,
    },
    "mistral-nemo-instruct-2407.yaml": {
        "model": "mistralai/Mistral-Nemo-Instruct-2407",
        "revision": "main",
        "served_model_name": ["mistralai/Mistral-Nemo-Instruct-2407"],
        "dtype": "bfloat16",
        "quantization": "fp8",
        "tensor_parallel_size": 1,
        "max_model_len": 131072,
        "gpu_memory_utilization": 0.9,
        "kv_cache_dtype": "auto",
        "tokenizer_mode": "mistral",
        "structured_outputs_config": COMPACT_JSON,
        # The card sells service tiers: the engine queues by priority.
        "scheduling_policy": "priority",
        "enable_prefix_caching": True,
        "config_format": "mistral",
        "load_format": "mistral",
    },
    "pygmalion-13b-4bit-128g.yaml": {
        "model": "DeepInfra/pygmalion-13b-4bit-128g",
        "revision": "main",
        "served_model_name": ["DeepInfra/pygmalion-13b-4bit-128g"],
        "dtype": "float16",
        "quantization": "gptq",
        "tensor_parallel_size": 1,
        "max_model_len": 2048,
        "gpu_memory_utilization": 0.9,
        "kv_cache_dtype": "auto",
        "tokenizer_mode": "auto",
        "structured_outputs_config": COMPACT_JSON,
        "enable_prefix_caching": True,
        "scheduling_policy": "priority",
    },
    "dev/smollm2-135m-instruct.yaml": {
        "model": "/cache/HuggingFaceTB--SmolLM2-135M-Instruct",
        "served_model_name": ["HuggingFaceTB/SmolLM2-135M-Instruct"],
        "dtype": "float32",
        "quantization": None,
        "tensor_parallel_size": 1,
        "max_model_len": 2048,
        "gpu_memory_utilization": 0.9,
        "kv_cache_dtype": "auto",
        "tokenizer_mode": "auto",
        "structured_outputs_config": COMPACT_JSON,
        "scheduling_policy": "priority",
    },
    "dev/tiny-mistral.yaml": {
        **TINY,
        "model": "/cache/deepinfra-serve--tiny-mistral",
        "served_model_name": ["deepinfra-serve/tiny-mistral"],
        "tokenizer_mode": "mistral",
    },
    "dev/tiny-random.yaml": {
        **TINY,
        "model": "/cache/deepinfra-serve--tiny-random-llama",
        "served_model_name": ["deepinfra-serve/tiny-random-llama"],
        "enable_log_requests": True,
        # Its LoRA section: adapters on the same engine.
        "enable_lora": True,
        "max_loras": 2,
        "max_lora_rank": 16,
        "max_cpu_loras": 4,
    },
}


def test_every_shipped_card_is_in_the_table() -> None:
    shipped = {str(p.relative_to(CARDS)) for p in CARDS.glob("**/*.yaml")}
    assert shipped == set(GPU_ARGS)


@pytest.mark.parametrize("name", sorted(GPU_ARGS))
def test_exact_gpu_engine_args(name: str) -> None:
    card = load_card(CARDS / name)
    plan = plan_engine(card, model_path(card, CACHE), "cuda")
    assert plan.kwargs == GPU_ARGS[name]
    assert plan.env == {} and plan.changes == []


def test_api_processes_per_card_on_gpus_and_one_on_the_cpu() -> None:
    cards = {name: load_card(CARDS / name) for name in GPU_ARGS}
    on_gpus = {name: api_process_count(card, "cuda", None) for name, card in cards.items()}
    assert on_gpus == {
        "codellama-70b-instruct.yaml": 4,
        "mistral-nemo-instruct-2407.yaml": 4,
        "mythomax-l2-13b-turbo.yaml": 2,
        "pygmalion-13b-4bit-128g.yaml": 2,
        "dev/smollm2-135m-instruct.yaml": 1,
        "dev/tiny-random.yaml": 1,
        "dev/tiny-mistral.yaml": 1,
    }
    assert {api_process_count(card, "cpu", None) for card in cards.values()} == {1}
    assert api_process_count(cards["dev/tiny-random.yaml"], "cpu", 2) == 2  # the setting wins


@pytest.mark.parametrize("name", sorted(GPU_ARGS))
def test_gpu_engine_args_become_vllms_async_engine_args(name: str) -> None:
    # vLLM's own AsyncEngineArgs takes every argument as given (a config needs the GPU
    # weights, so none is built here).
    card = load_card(CARDS / name)
    args = build_engine_args(plan_engine(card, model_path(card, CACHE), "cuda"))
    for key, value in GPU_ARGS[name].items():
        if key == "structured_outputs_config":
            assert args.structured_outputs_config.disable_any_whitespace is True
        else:
            assert getattr(args, key) == value


def test_cpu_profile_replaces_gpu_only_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    card = load_card(CARDS / "codellama-70b-instruct.yaml")
    plan = plan_engine(card, model_path(card, CACHE), "cpu", cpu_kv_cache_gib=2)
    gpu = gpu_engine_kwargs(card, model_path(card, CACHE))
    assert plan.kwargs == {
        **gpu,
        "quantization": None,
        "dtype": "float32",
        "enforce_eager": True,
        "enable_chunked_prefill": False,
    }
    assert plan.env == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "0|1|2|3"}
    joined = "\n".join(plan.changes)
    assert "quantization: 'fp8' -> None" in joined
    assert "dtype: 'bfloat16' -> 'float32'" in joined


def test_cpu_profile_keeps_working_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    card = load_card(CARDS / "dev" / "tiny-random.yaml")
    plan = plan_engine(card, "/m", "cpu")
    assert plan.kwargs["dtype"] == "float32"
    assert plan.kwargs["quantization"] is None
    assert plan.changes == [
        "enforce_eager: None -> True (skips torch.compile start-up on the CPU)",
        "enable_chunked_prefill: None -> False (seeded sampling crashes the CPU worker otherwise)",
    ]
    assert "VLLM_CPU_OMP_THREADS_BIND" not in plan.env


def test_cpu_profile_refuses_more_ranks_than_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1})
    card = load_card(CARDS / "codellama-70b-instruct.yaml")
    with pytest.raises(ValueError, match="tensor_parallel_size 4 needs at least 4 CPU cores"):
        plan_engine(card, "/m", "cpu")


def test_cpu_profile_respects_an_explicit_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
    card = load_card(CARDS / "mythomax-l2-13b-turbo.yaml")
    plan = plan_engine(card, "/m", "cpu")
    assert "VLLM_CPU_OMP_THREADS_BIND" not in plan.env


def test_offline_weights_live_in_the_cache_dir() -> None:
    card = load_card(CARDS / "dev" / "tiny-random.yaml")
    assert model_path(card, CACHE) == "/cache/deepinfra-serve--tiny-random-llama"


def test_engine_args_on_the_command_line() -> None:
    """`deepinfra-serve engine-args` prints the plan the server would run with."""
    out = subprocess.run(
        [sys.executable, "-m", "deepinfra_serve.cli", "engine-args", "--device", "cuda",
         "--card", str(CARDS / "mythomax-l2-13b-turbo.yaml")],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    printed = json.loads(out.stdout)
    assert printed["device"] == "cuda"
    assert printed["api_processes"] == 2
    assert printed["engine_args"] == GPU_ARGS["mythomax-l2-13b-turbo.yaml"]
    assert printed["env"] == {} and printed["changes"] == []


def test_the_engine_traces_where_opentelemetrys_settings_say() -> None:
    """With an OTLP endpoint set, the engine gets vLLM's `otlp_traces_endpoint` (its spans go
    under the server's); a protocol the server cannot use is refused before anything starts."""
    command = [sys.executable, "-m", "deepinfra_serve.cli", "engine-args", "--device", "cuda",
               "--card", str(CARDS / "mythomax-l2-13b-turbo.yaml")]  # fmt: skip
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120, env=env)
    printed = json.loads(out.stdout)
    assert printed["engine_args"] == {
        **GPU_ARGS["mythomax-l2-13b-turbo.yaml"],
        "otlp_traces_endpoint": "http://127.0.0.1:4318/v1/traces",
    }
    assert printed["env"] == {  # what the engine's own processes read
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/json"
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json'" in refused.stderr
