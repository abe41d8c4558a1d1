"""The tier arm: what service tiers buy on one engine, measured on this service alone.

1. Priority under saturation: default streams at twice the engine's batch (`max_num_seqs`), so
   half of them wait in the engine's queue, and beside them one priority stream at a time.
   Target: the priority stream's TTFT p50 at most 0.3 x the default streams'.
2. Flex on idle capacity: default streams at half the batch, alone and then with flex streams
   beside them (as many as the batch), in paired rounds whose order alternates. Targets: the
   default streams' throughput and TTFT p50 with flex within 5 % of without; the flex tokens/s
   are what the idle capacity sold.

Each part runs its own server: part 1 admits every default stream (the model's limit is four
batches), part 2 sets the limit at the batch, so that flex fills only the room default leaves.

    python -m benchmarks.tiers --card model_cards/dev/tiny-random.yaml --out benchmarks/out
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from pathlib import Path
from typing import Any

import uvloop
import yaml
from tqdm import tqdm

from deepinfra_serve.config import strict_yaml
from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.weights import prepare_weights

from .measure import percentile
from .servers import bench_card, bench_parser, ours_command, server
from .workload import Sample, chat_bodies, drive

PATH = "/v1/openai/chat/completions"


def _card_with_batch(card: Path, batch: int, out: Path) -> Path:
    raw = strict_yaml.load(card.read_text())
    raw.setdefault("engine", {}).setdefault("extra_args", {})["max_num_seqs"] = batch
    path = out / f"tiers-{card.name}"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


def _bodies(model: str, n: int, max_tokens: int, tier: str | None) -> list[dict[str, Any]]:
    bodies = chat_bodies(model, n, max_tokens)
    if tier is not None:
        for body in bodies:
            body["service_tier"] = tier
    return bodies


async def _together(base: str, arms: list[tuple[list[dict[str, Any]], int]]) -> list[Any]:
    """Drive the arms at once, each over its own connections; each arm's (samples, seconds)."""
    return await asyncio.gather(
        *(drive(base, PATH, bodies, conc, tqdm(disable=True)) for bodies, conc in arms)
    )


def _ttft_p50(samples: list[Sample]) -> float:
    ttfts = [s.ttft for s in samples if s.ok and s.ttft is not None]
    return percentile(ttfts, 50) if ttfts else float("nan")


def _tokens(samples: list[Sample]) -> int:
    return sum(s.tokens for s in samples if s.ok)


def _failures(samples: list[Sample]) -> int:
    return sum(not s.ok for s in samples)


def priority_part(base: str, model: str, batch: int, max_tokens: int) -> dict[str, float]:
    default = _bodies(model, 2 * batch * 6, max_tokens, None)
    # Fewer than the default streams can finish meanwhile: all of them run under saturation.
    priority = _bodies(model, 12, max_tokens, "priority")
    (d, _), (p, _) = uvloop.run(_together(base, [(default, 2 * batch), (priority, 1)]))
    return {
        "default_ttft_p50_s": _ttft_p50(d),
        "priority_ttft_p50_s": _ttft_p50(p),
        "ratio": _ttft_p50(p) / _ttft_p50(d),
        "failures": _failures(d) + _failures(p),
    }


def flex_part(
    base: str, model: str, batch: int, max_tokens: int, with_flex: bool
) -> dict[str, float]:
    streams = max(1, batch // 2)
    default = _bodies(model, streams * 16, max_tokens, None)
    arms = [(default, streams)]
    if with_flex:
        arms.append((_bodies(model, batch * 16, max_tokens, "flex"), batch))
    results = uvloop.run(_together(base, arms))
    d, seconds = results[0]
    figures = {
        "default_tokens_per_s": _tokens(d) / seconds,
        "default_ttft_p50_s": _ttft_p50(d),
        "failures": _failures(d),
    }
    if with_flex:
        f, _ = results[1]
        # Flex's tokens while the default arm ran: the rest of its work ran after, on an idle
        # engine, and says nothing about the room it took.
        done = [s for s in f if s.ok]
        figures["flex_tokens_per_s"] = _tokens(done) / seconds if seconds else 0.0
        figures["flex_refused"] = sum(s.error == "HTTP 429" for s in f)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__ or "", "8", rounds=3)
    parser.add_argument("--batch", type=int, default=8, help="the engine's max_num_seqs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    card_file = _card_with_batch(bench_card(args.card, args.out), args.batch, args.out)
    card = load_card(card_file)
    prepare_weights(card, args.cache_dir)
    port = 8300
    base = f"http://127.0.0.1:{port}"
    cmd = ours_command(card_file, port, args.cache_dir)
    results: dict[str, Any] = {"batch": args.batch, "max_tokens": args.max_tokens}

    env = {**os.environ, "DEEPINFRA_SERVE_MAX_CONCURRENT_REQUESTS": str(4 * args.batch)}
    with server("priority", cmd, env, base, args.out / "tiers-priority.log"):
        rounds = [
            priority_part(base, card.name, args.batch, args.max_tokens) for _ in range(args.rounds)
        ]
    ratios = [r["ratio"] for r in rounds]
    results["priority"] = {"rounds": rounds, "ratio_median": statistics.median(ratios)}
    print(
        f"priority TTFT p50 / default's under saturation: median {statistics.median(ratios):.3f}"
        f" (rounds {min(ratios):.3f}-{max(ratios):.3f}; target <= 0.3)"
    )

    env = {**os.environ, "DEEPINFRA_SERVE_MAX_CONCURRENT_REQUESTS": str(args.batch)}
    with server("flex", cmd, env, base, args.out / "tiers-flex.log"):
        pairs = []
        for i in range(args.rounds):
            order = [False, True] if i % 2 == 0 else [True, False]
            got = {w: flex_part(base, card.name, args.batch, args.max_tokens, w) for w in order}
            pairs.append({"without": got[False], "with": got[True]})
    throughput = [
        p["with"]["default_tokens_per_s"] / p["without"]["default_tokens_per_s"] for p in pairs
    ]
    ttft = [p["with"]["default_ttft_p50_s"] / p["without"]["default_ttft_p50_s"] for p in pairs]
    gained = [p["with"]["flex_tokens_per_s"] for p in pairs]
    results["flex"] = {
        "rounds": pairs,
        "default_throughput_ratio_median": statistics.median(throughput),
        "default_ttft_ratio_median": statistics.median(ttft),
        "flex_tokens_per_s_median": statistics.median(gained),
    }
    print(
        f"default with flex / without: throughput {statistics.median(throughput):.3f} "
        f"({min(throughput):.3f}-{max(throughput):.3f}), TTFT p50 {statistics.median(ttft):.3f} "
        f"({min(ttft):.3f}-{max(ttft):.3f}); flex tokens/s gained "
        f"{statistics.median(gained):.0f} (target: within 5 %)"
    )
    (args.out / "tiers.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
