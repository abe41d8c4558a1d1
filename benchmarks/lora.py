"""The LoRA arm: what serving through an adapter costs, on this service alone.

1. An adapter against its base: the same streaming chat requests named by the base model and
   by the card's adapter, at 1 and 32 streams, in rounds whose order alternates: tokens per
   second and TTFT p50.
2. Four adapters interleaved against one: at 32 streams, each request naming the next of four
   adapters added at run time against all naming one (the tiny card's engine holds
   `max_loras: 2` at once, so four take turns).

    python -m benchmarks.lora --card model_cards/dev/tiny-random.yaml --out benchmarks/out
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx
import uvloop
import yaml
from tqdm import tqdm

from deepinfra_serve.config.adapters import GeneratedAdapterWeights
from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.generated_adapters import generate_adapter
from deepinfra_serve.engine.weights import prepare_weights

from .measure import percentile
from .servers import bench_card, bench_parser, ours_command, server
from .workload import chat_bodies, drive

PATH = "/v1/openai/chat/completions"


def load(
    base: str, models: list[str], requests: int, max_tokens: int, streams: int
) -> dict[str, float]:
    """`requests` streaming chat requests over `streams` connections, naming `models` in turn."""
    bodies = chat_bodies(models[0], requests, max_tokens)
    for i, body in enumerate(bodies):
        body["model"] = models[i % len(models)]
    samples, seconds = uvloop.run(drive(base, PATH, bodies, streams, tqdm(disable=True)))
    ok = [s for s in samples if s.ok]
    assert len(ok) == len(samples), [s.error for s in samples if not s.ok][:3]
    return {
        "tokens_per_s": sum(s.tokens for s in ok) / seconds,
        "ttft_p50_s": percentile([s.ttft for s in ok if s.ttft is not None], 50),
    }


def paired(
    rounds: int, arms: dict[str, Any], run: Any
) -> tuple[list[dict[str, dict[str, float]]], dict[str, float]]:
    """Each round runs every arm, in an order that alternates; medians of the ratios of the
    second arm to the first."""
    names = list(arms)
    got = []
    for i in range(rounds):
        row = {}
        for name in names if i % 2 == 0 else names[::-1]:
            row[name] = run(arms[name])
        got.append(row)
    first, second = names
    ratios = {
        key: [r[second][key] / r[first][key] for r in got] for key in ("tokens_per_s", "ttft_p50_s")
    }
    summary = {}
    for key, values in ratios.items():
        summary[f"{key}_ratio_median"] = statistics.median(values)
        summary[f"{key}_ratio_min"] = min(values)
        summary[f"{key}_ratio_max"] = max(values)
    return got, summary


def _ratios(summary: dict[str, float]) -> str:
    return ", ".join(
        f"{label} {summary[f'{key}_ratio_median']:.3f} "
        f"({summary[f'{key}_ratio_min']:.3f}-{summary[f'{key}_ratio_max']:.3f})"
        for label, key in (("tokens/s", "tokens_per_s"), ("TTFT p50", "ttft_p50_s"))
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__ or "", "1,32", rounds=5)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # Room for the four adapters added here, whatever the card's bounds.
    raw = yaml.safe_load(bench_card(args.card, args.out).read_text())
    raw["lora"].update(max_added=8, max_added_per_key=8)
    card_file = args.out / "bench-lora-card.yaml"
    card_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    card = load_card(card_file)
    assert card.lora is not None and card.lora.adapters, f"{card_file} has no LoRA adapter"
    model_dir = Path(prepare_weights(card, args.cache_dir))
    adapter_dir = Path(tempfile.mkdtemp(prefix="bench-adapters-"))
    for seed in range(11, 15):
        spec = GeneratedAdapterWeights(source="generated", seed=seed, rank=8)
        generate_adapter(spec, model_dir, adapter_dir / f"a{seed}")
    port = 8320
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DEEPINFRA_SERVE_DATA_DIR": tempfile.mkdtemp(prefix="bench-store-"),
        "DEEPINFRA_SERVE_ADAPTER_DIRS": str(adapter_dir),
    }
    results: dict[str, Any] = {"max_tokens": args.max_tokens}
    adapter = card.lora.adapters[0].name
    with server(
        "lora", ours_command(card_file, port, args.cache_dir), env, base, args.out / "lora.log"
    ):
        added = []
        for seed in range(11, 15):
            name = f"bench/a{seed}"
            body = {"lora_model_name": name, "hf_model_name": str(adapter_dir / f"a{seed}")}
            r = httpx.post(f"{base}/lora-model", json=body, timeout=60)
            assert r.status_code == 200, r.text
            added.append(name)
        for streams in (int(c) for c in str(args.concurrency).split(",")):
            requests = args.requests or max(24, 8 * streams)
            load(base, [card.name, adapter], requests, args.max_tokens, streams)  # warm-up
            rounds, summary = paired(
                args.rounds,
                {"base": [card.name], "adapter": [adapter]},
                lambda models, s=streams, n=requests: load(base, models, n, args.max_tokens, s),
            )
            results[f"adapter_vs_base_{streams}"] = {"rounds": rounds, **summary}
            print(f"adapter / base at {streams} streams: {_ratios(summary)}")
        requests = args.requests or 256
        load(base, added, requests, args.max_tokens, 32)  # every adapter loaded once
        rounds, summary = paired(
            args.rounds,
            {"one": added[:1], "four": added},
            lambda models: load(base, models, requests, args.max_tokens, 32),
        )
        results["four_vs_one_32"] = {"rounds": rounds, **summary}
        print(f"four adapters interleaved / one at 32 streams: {_ratios(summary)}")
    (args.out / "lora.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
