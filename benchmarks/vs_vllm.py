"""Side-by-side benchmark: this service against vLLM's own OpenAI server.

Both servers run the same model card with the same engine arguments (vLLM's flags are derived
from the card's engine plan), on the same machine, and get the same workload: streaming chat
completions with the same prompt, sampling and per-request seeds. Measurements alternate
between the two servers, round after round, at each concurrency, so that drift in the machine
hits both alike. The ratios are paired: ours over vLLM's within each round (the two
measurements minutes apart at most), then the median over rounds, with the lowest and highest.

    python -m benchmarks.vs_vllm --card model_cards/dev/tiny-random.yaml --out benchmarks/out
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from deepinfra_serve.cards import load_card
from deepinfra_serve.engine_args import plan_engine
from deepinfra_serve.weights import prepare_weights

from .measure import Summary, combine, cpu_seconds, paired_ratios, summarize
from .report import limit_markdown, machine, markdown, paired_markdown, plot
from .servers import ours_command, server, vllm_command
from .workload import run_level


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--card", type=Path, default=Path("model_cards/dev/tiny-random.yaml"))
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--requests", type=int, default=0, help="per level; default 8 x concurrency, at least 64"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "deepinfra-serve"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    parser.add_argument("--no-limit", action="store_true", help="skip the in-process limit arm")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    card = load_card(args.card)
    if not args.no_limit:
        # The ceiling first, in a process of its own, so that its engine is gone before the
        # servers start.
        limit_cmd = [sys.executable, "-m", "benchmarks.limit", "--card", str(args.card)]
        limit_cmd += ["--concurrency", args.concurrency, "--max-tokens", str(args.max_tokens)]
        limit_cmd += ["--cache-dir", str(args.cache_dir), "--out", str(args.out)]
        limit_cmd += ["--requests", str(args.requests)]
        subprocess.run(limit_cmd, check=True)
    model_dir = prepare_weights(card, args.cache_dir)
    plan = plan_engine(card, model_dir, "cpu")
    env = {**os.environ, **plan.env}
    ours_port, vllm_port = 18311, 18312
    ours_cmd = ours_command(args.card, ours_port, args.cache_dir)
    vllm_cmd = vllm_command(plan.kwargs, vllm_port, card.chat_template, args.out)
    targets = {
        "deepinfra-serve": (f"http://127.0.0.1:{ours_port}", "/v1/openai/chat/completions"),
        "vllm-server": (f"http://127.0.0.1:{vllm_port}", "/v1/chat/completions"),
    }
    total = sum(args.requests or max(64, 8 * c) for c in levels) * 2 * args.rounds
    rows: list[Summary] = []
    with (
        server(
            "deepinfra-serve",
            ours_cmd,
            env,
            targets["deepinfra-serve"][0],
            args.out / "deepinfra-serve.log",
        ) as ours_api,
        server(
            "vllm-server", vllm_cmd, env, targets["vllm-server"][0], args.out / "vllm-server.log"
        ) as vllm_api,
        tqdm(total=total, unit="req", desc="benchmark") as bar,
    ):
        for base, path in targets.values():  # warm-up, not measured
            asyncio.run(run_level(base, path, card.name, 4, 8, args.max_tokens, tqdm(disable=True)))
        for rnd in range(args.rounds):
            for c in levels:
                order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
                for name in order:
                    base, path = targets[name]
                    bar.set_postfix(server=name, concurrency=c, round=rnd + 1)
                    n = args.requests or max(64, 8 * c)
                    api = ours_api if name == "deepinfra-serve" else vllm_api
                    cpu = cpu_seconds(api)
                    samples, elapsed = asyncio.run(
                        run_level(base, path, card.name, c, n, args.max_tokens, bar)
                    )
                    cpu = cpu_seconds(api) - cpu
                    rows.append(summarize(name, c, rnd + 1, samples, elapsed, cpu))
    combined = combine(rows)
    table = markdown(combined, levels) + "\n" + paired_markdown(paired_ratios(rows, levels))
    kinds = Counter()
    for r in rows:
        kinds.update({f"{r.server} at {r.concurrency}: {k}": n for k, n in r.error_kinds.items()})
    limit_file = args.out / "limit.json"
    if not args.no_limit and limit_file.exists():
        limit = {int(c): f for c, f in json.loads(limit_file.read_text()).items()}
        table += "\n" + limit_markdown(combined, levels, limit)
    if kinds:
        table += "\nErrors: " + "; ".join(f"{k} x {n}" for k, n in sorted(kinds.items())) + "\n"
    (args.out / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    (args.out / "results.md").write_text(
        f"Machine: {machine()}\n\nCard: `{args.card}`, {args.rounds} rounds, "
        f"{args.max_tokens} tokens per request, streaming chat completions.\n\n{table}"
    )
    plot(combined, levels, args.out / "results.png")
    print(table)
    print(f"written: {args.out / 'results.md'}, {args.out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
