"""The limit arm: the same workload driven straight into `AsyncLLM` in one process, no HTTP.

What an engine with the card's arguments completes on this machine when nothing stands
between the caller and it: the ceiling every server is measured against (`vs_vllm` reports
each server's throughput as a fraction of it). Streaming chat, the same prompt rendered with
the card's chat template, the same sampling and per-request seeds, deltas consumed as a
streaming server would.

    python -m benchmarks.limit --card model_cards/dev/tiny-random.yaml --out benchmarks/out
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.engine_args import build_engine_args, plan_engine
from deepinfra_serve.engine.served_model import ServedModel
from deepinfra_serve.engine.weights import prepare_weights

from .servers import bench_card, bench_parser
from .workload import PROMPT, requests_per_level


async def run_level(
    model: ServedModel, prompt: dict[str, Any], concurrency: int, requests: int, max_tokens: int
) -> tuple[int, float, float]:
    """(output tokens, seconds, CPU seconds of this process) for `requests` streams,
    `concurrency` at a time. The CPU time is vLLM's client side (receiving, detokenizing and
    handing out each step's outputs, adding requests) plus this small driver: the floor of
    what any API process over `AsyncLLM` spends per token."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    tokens = 0

    async def worker(w: int) -> None:
        nonlocal tokens
        while not queue.empty():
            i = queue.get_nowait()
            params = SamplingParams(
                max_tokens=max_tokens,
                temperature=1.0,
                seed=1000 + i,
                output_kind=RequestOutputKind.DELTA,
            )
            async for out in model.generate(prompt, params, f"limit-{concurrency}-{w}-{i}"):
                tokens += len(out.outputs[0].token_ids)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return tokens, time.perf_counter() - started, time.process_time() - cpu


async def measure(args: argparse.Namespace) -> dict[int, dict[str, float]]:
    card = load_card(args.card)
    plan = plan_engine(card, prepare_weights(card, args.cache_dir), "cpu")
    model = ServedModel.start(card, ServedModel.own_engine(build_engine_args(plan)))
    try:
        prompt = await model.prompts.chat(PROMPT)
        await run_level(model, prompt, 4, 8, args.max_tokens)  # warm-up
        levels = [int(c) for c in args.concurrency.split(",")]
        results: dict[int, dict[str, float]] = {}
        for c in levels:
            n = args.requests or requests_per_level(c)
            rates = []
            for _ in range(args.rounds):
                tokens, seconds, cpu = await run_level(model, prompt, c, n, args.max_tokens)
                rates.append((tokens / seconds, n / seconds, cpu * 1e6 / tokens))
            results[c] = {
                "output_tokens_per_s": statistics.median(r[0] for r in rates),
                "requests_per_s": statistics.median(r[1] for r in rates),
                "client_cpu_ms_per_1k_tokens": statistics.median(r[2] for r in rates),
            }
            print(f"limit at {c}: {results[c]['output_tokens_per_s']:.0f} tok/s", flush=True)
        return results
    finally:
        model.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__ or "", "1,8,32,128", rounds=3).parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.card = bench_card(args.card, args.out)
    results = asyncio.run(measure(args))
    (args.out / "limit.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
