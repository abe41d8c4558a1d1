"""Side-by-side benchmark: this service against vLLM's own OpenAI server.

The servers (this service with 1 and with 2 front-end processes, and vLLM's) run the same model
card with the same engine arguments (vLLM's flags are derived
from the card's engine plan), on the same machine, and get the same workload: streaming chat
completions with the same prompt, sampling and per-request seeds. Measurements alternate
between the two servers, round after round, at each concurrency, so that drift in the machine
hits both alike. The ratios are paired: ours over vLLM's within each round (the two
measurements minutes apart at most), then the median over rounds, with the lowest and highest.
With `--bare`, the HTTP floor (`benchmarks.bare_asgi`, a raw ASGI callable over the same engine)
is measured beside them. Every arm runs the card as production cards run
(`servers.bench_card`: without the request logs only the tests want).

    python -m benchmarks.vs_vllm --card model_cards/dev/tiny-random.yaml --out benchmarks/out
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import asdict

from tqdm import tqdm

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.engine_args import plan_engine
from deepinfra_serve.engine.weights import prepare_weights

from .measure import Summary, combine, cpu_seconds, front_end, paired_ratios, summarize
from .report import limit_markdown, machine, markdown, paired_markdown, plot
from .servers import bare_command, bench_card, bench_parser, ours_command, server, vllm_command
from .workload import requests_per_level, run_level


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__ or "", "1,8,32,128", rounds=5)
    parser.add_argument("--no-limit", action="store_true", help="skip the in-process limit arm")
    parser.add_argument(
        "--api-processes", default="1,2", help="this service's arms: front-end processes each"
    )
    parser.add_argument(
        "--bare", action="store_true", help="also measure the HTTP floor (benchmarks.bare_asgi)"
    )
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    card_file = bench_card(args.card, args.out)
    card = load_card(card_file)
    if not args.no_limit:
        # The ceiling first, in a process of its own, so that its engine is gone before the
        # servers start.
        limit_cmd = [sys.executable, "-m", "benchmarks.limit", "--card", str(card_file)]
        limit_cmd += ["--concurrency", args.concurrency, "--max-tokens", str(args.max_tokens)]
        limit_cmd += ["--cache-dir", str(args.cache_dir), "--out", str(args.out)]
        limit_cmd += ["--requests", str(args.requests)]
        subprocess.run(limit_cmd, check=True)
    model_dir = prepare_weights(card, args.cache_dir)
    plan = plan_engine(card, model_dir, "cpu")
    env = {**os.environ, **plan.env}
    vllm_port = 18310
    arms = [int(n) for n in args.api_processes.split(",")]
    names = {n: "deepinfra-serve" if n == 1 else f"deepinfra-serve-{n}p" for n in arms}
    commands = {
        names[n]: (
            ours_command(card_file, 18311 + k, args.cache_dir),
            {**env, "DEEPINFRA_SERVE_API_PROCESSES": str(n)},
            f"http://127.0.0.1:{18311 + k}",
            "/v1/openai/chat/completions",
        )
        for k, n in enumerate(arms)
    }
    commands["vllm-server"] = (
        vllm_command(plan.kwargs, vllm_port, card.chat_template, args.out),
        env,
        f"http://127.0.0.1:{vllm_port}",
        "/v1/chat/completions",
    )
    if args.bare:
        bare_port = 18309
        commands["bare-asgi"] = (
            bare_command(card_file, bare_port, args.cache_dir),
            env,
            f"http://127.0.0.1:{bare_port}",
            "/v1/chat/completions",
        )
    per_round = sum(args.requests or requests_per_level(c) for c in levels)
    total = per_round * len(commands) * args.rounds
    rows: list[Summary] = []
    with contextlib.ExitStack() as stack:
        front_ends = {
            name: front_end(
                stack.enter_context(server(name, cmd, e, url, args.out / f"{name}.log"))
            )
            for name, (cmd, e, url, _) in commands.items()
        }
        bar = stack.enter_context(tqdm(total=total, unit="req", desc="benchmark"))
        for _, _, base, path in commands.values():  # warm-up, not measured
            run_level(base, path, card.name, 4, 8, args.max_tokens)
        for rnd in range(args.rounds):
            for c in levels:
                order = list(commands) if rnd % 2 == 0 else list(reversed(commands))
                for name in order:
                    _, _, base, path = commands[name]
                    bar.set_postfix(server=name, concurrency=c, round=rnd + 1)
                    n = args.requests or requests_per_level(c)
                    cpu = cpu_seconds(front_ends[name])
                    level = run_level(base, path, card.name, c, n, args.max_tokens, bar)
                    cpu = cpu_seconds(front_ends[name]) - cpu
                    rows.append(summarize(name, c, rnd + 1, level, cpu))
    combined = combine(rows)
    table = markdown(combined, levels)
    for name in [n for n in commands if n != "vllm-server"]:
        table += "\n" + paired_markdown(paired_ratios(rows, levels, name), name)
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
        f"Machine: {machine()}\n\nCard: `{args.card}` (as `{card_file}` runs it), "
        f"{args.rounds} rounds, "
        f"{args.max_tokens} tokens per request, streaming chat completions.\n\n{table}"
    )
    plot(combined, levels, args.out / "results.png")
    print(table)
    print(f"written: {args.out / 'results.md'}, {args.out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
