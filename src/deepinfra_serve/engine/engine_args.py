"""Card -> vLLM engine arguments, with a CPU profile for machines without a GPU.

Cards describe the GPU deployment. On a CPU-only machine some of those settings cannot run
(fp8 kernels are GPU-only; bfloat16 crashes the CPU worker on common x86 parts), so the CPU
profile swaps them for working equivalents and says what it changed, rather than failing
inside a worker process minutes later.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config.cards import HubWeights, ModelCard
from ..observability.tracing import TracingSettings

log = logging.getLogger(__name__)

Device = Literal["cuda", "cpu"]


@dataclass(frozen=True)
class EnginePlan:
    """Keyword arguments for `AsyncEngineArgs`, the environment the workers need, and why."""

    kwargs: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)


def gpu_engine_kwargs(card: ModelCard, model: str) -> dict[str, Any]:
    """The engine arguments the card asks for, exactly as a GPU node runs them."""
    spec = card.engine
    kwargs: dict[str, Any] = {
        "model": model,
        "served_model_name": [card.name],
        "dtype": spec.dtype,
        "quantization": spec.quantization,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "max_model_len": spec.max_model_len,
        "gpu_memory_utilization": spec.gpu_memory_utilization,
        "kv_cache_dtype": spec.kv_cache_dtype,
        "tokenizer_mode": spec.tokenizer_mode,
        # Structured outputs (response_format, forced tool calls) as compact JSON: with any
        # whitespace allowed, weak models loop on newlines until max_tokens. vLLM 0.32 reads
        # this engine-wide only (a request's own flag is ignored), and only with a named
        # backend; xgrammar is the one its "auto" picks.
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
    }
    if isinstance(card.weights, HubWeights):
        kwargs["revision"] = card.weights.revision
    # Service tiers and batch lines order the engine's waiting queue (and what it preempts
    # first when its KV cache runs out) by each request's `priority`; under fcfs vLLM ignores
    # it.
    kwargs["scheduling_policy"] = "priority"
    if card.lora is not None:
        # LoRA adapters, the card's and those added at run time, on the same engine.
        kwargs["enable_lora"] = True
        kwargs["max_loras"] = card.lora.max_loras
        kwargs["max_lora_rank"] = card.lora.max_lora_rank
        kwargs["max_cpu_loras"] = card.lora.max_cpu_loras
    kwargs.update(spec.extra_args)
    return kwargs


def _cpu_thread_binding(tp: int) -> str:
    """Split the cores this process may use into one group per tensor-parallel rank."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < tp:
        raise ValueError(
            f"tensor_parallel_size {tp} needs at least {tp} CPU cores; {len(cores)} available"
        )
    per_rank = len(cores) // tp
    groups = [cores[i * per_rank : (i + 1) * per_rank] for i in range(tp)]
    return "|".join(",".join(str(c) for c in g) for g in groups)


def plan_engine(
    card: ModelCard,
    model: str,
    device: Device,
    *,
    cpu_kv_cache_gib: int = 1,
    traces: TracingSettings | None = None,
) -> EnginePlan:
    """`traces`: where the engine's spans go (`observability.tracing`); None: off."""
    kwargs = gpu_engine_kwargs(card, model)
    env: dict[str, str] = {}
    if traces is not None:
        kwargs["otlp_traces_endpoint"] = traces.traces_endpoint
        # vLLM's engine processes read these two alone (not OTEL_EXPORTER_OTLP_ENDPOINT or
        # _PROTOCOL) for the spans of their start-up.
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = traces.traces_endpoint
        env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = traces.protocol
    if device == "cuda":
        return EnginePlan(kwargs, env)

    changes: list[str] = []

    def replace(key: str, value: Any, why: str) -> None:
        if kwargs.get(key) != value:
            changes.append(f"{key}: {kwargs.get(key)!r} -> {value!r} ({why})")
            kwargs[key] = value

    if kwargs["quantization"] == "fp8":
        replace("quantization", None, "fp8 kernels are GPU-only")
    if kwargs["dtype"] in ("auto", "bfloat16"):
        replace("dtype", "float32", "bfloat16 crashes the CPU worker")
    if str(kwargs["kv_cache_dtype"]).startswith("fp8"):
        replace("kv_cache_dtype", "auto", "fp8 KV cache is GPU-only")
    replace("enforce_eager", True, "skips torch.compile start-up on the CPU")
    # vLLM rewinds a seeded request's random generator when its prefill is split over steps;
    # CPU generators cannot rewind, and the worker dies. Whole prefills avoid it.
    replace("enable_chunked_prefill", False, "seeded sampling crashes the CPU worker otherwise")

    env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", str(cpu_kv_cache_gib))
    tp = kwargs["tensor_parallel_size"]
    if tp > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        # Without an explicit binding vLLM wants one NUMA node per rank, which these hosts lack.
        env["VLLM_CPU_OMP_THREADS_BIND"] = _cpu_thread_binding(tp)
        changes.append(f"VLLM_CPU_OMP_THREADS_BIND={env['VLLM_CPU_OMP_THREADS_BIND']}")
    return EnginePlan(kwargs, env, changes)


def api_process_count(card: ModelCard, device: Device, setting: int | None) -> int:
    """Front-end processes: the setting, else the card's on GPUs and one on the CPU, where
    the engine itself needs the cores."""
    if setting is not None:
        return setting
    return card.engine.api_processes if device == "cuda" else 1


def detect_device() -> Device:
    from .vllm_seam import current_platform

    return "cpu" if current_platform.is_cpu() else "cuda"


def build_engine_args(plan: EnginePlan) -> Any:
    """Apply the plan's environment and build `AsyncEngineArgs` (imports vLLM)."""
    os.environ.update(plan.env)
    for change in plan.changes:
        log.warning("CPU profile: %s", change)
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs = dict(plan.kwargs)
    if isinstance(so := kwargs.get("structured_outputs_config"), dict):
        kwargs["structured_outputs_config"] = StructuredOutputsConfig(**so)
    return AsyncEngineArgs(**kwargs)
