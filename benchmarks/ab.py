"""A/B of two versions of this service: the code of a git revision against the working tree,
the same card, engine arguments and workload, measured in interleaved rounds.

Each round measures both arms at each concurrency back to back, the order turning every round,
and the ratios are paired within a round (after / before): API-process CPU per 1,000 tokens,
throughput and TTFT p50, medians over rounds with the lowest and highest. The "before" arm
runs from a `git worktree` of the revision, its `src/` first on the path; the engine is the
same installed vLLM.

    python -m benchmarks.ab --before HEAD~3 --concurrency 32,128 --rounds 5
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.engine_args import plan_engine
from deepinfra_serve.engine.weights import prepare_weights

from .measure import Summary, combine, cpu_seconds, front_end, paired_ratios, summarize
from .report import machine, markdown, paired_markdown
from .servers import bench_card, bench_parser, ours_command, server
from .workload import requests_per_level, run_level

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__ or "", "32,128", rounds=5)
    parser.add_argument("--before", required=True, help="the git revision to compare against")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    revision = subprocess.run(
        ["git", "rev-parse", "--short", args.before],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = args.out / f"ab-{revision}"
    if not tree.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT, check=True
        )
    card_file = bench_card(args.card, args.out)
    card = load_card(card_file)
    plan = plan_engine(card, prepare_weights(card, args.cache_dir), "cpu")
    env = {**os.environ, **plan.env}
    arms = {
        "before": (18331, {**env, "PYTHONPATH": str(tree / "src")}),
        "after": (18332, {**env, "PYTHONPATH": str(ROOT / "src")}),
    }
    rows: list[Summary] = []
    total = args.rounds * len(arms) * sum(args.requests or requests_per_level(c) for c in levels)
    try:
        with contextlib.ExitStack() as stack:
            front = {
                name: front_end(
                    stack.enter_context(
                        server(
                            name,
                            ours_command(card_file, port, args.cache_dir),
                            arm_env,
                            f"http://127.0.0.1:{port}",
                            args.out / f"ab-{name}.log",
                        )
                    )
                )
                for name, (port, arm_env) in arms.items()
            }
            bar = stack.enter_context(tqdm(total=total, unit="req", desc="A/B"))
            for port, _ in arms.values():  # warm-up, not measured
                run_level(f"http://127.0.0.1:{port}", CHAT, card.name, 4, 8, args.max_tokens)
            for rnd in range(args.rounds):
                for c in levels:
                    order = list(arms) if rnd % 2 == 0 else list(reversed(arms))
                    for name in order:
                        base = f"http://127.0.0.1:{arms[name][0]}"
                        n = args.requests or requests_per_level(c)
                        bar.set_postfix(arm=name, concurrency=c, round=rnd + 1)
                        cpu = cpu_seconds(front[name])
                        level = run_level(base, CHAT, card.name, c, n, args.max_tokens, bar)
                        cpu = cpu_seconds(front[name]) - cpu
                        rows.append(summarize(name, c, rnd + 1, level, cpu))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    (args.out / "ab.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    table = markdown(combine(rows), levels, baseline="before")
    table += "\n" + paired_markdown(
        paired_ratios(rows, levels, "after", "before"), "after", "before"
    )
    report = (
        f"Machine: {machine()}\n\nBefore: {revision}; after: the working tree. Card: "
        f"`{args.card}`, {args.rounds} rounds, {args.max_tokens} tokens per request, streaming "
        f"chat completions.\n\n{table}"
    )
    (args.out / "ab.md").write_text(report)
    print(report)
    return 0


CHAT = "/v1/openai/chat/completions"

if __name__ == "__main__":
    sys.exit(main())
