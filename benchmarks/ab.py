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

import argparse
import contextlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from tqdm import tqdm

from deepinfra_serve.config.cards import ModelCard, load_card
from deepinfra_serve.engine.engine_args import plan_engine
from deepinfra_serve.engine.weights import prepare_weights

from .measure import Summary, combine, cpu_seconds, front_end, paired_ratios, summarize
from .report import machine, markdown, paired_markdown
from .servers import bench_card, bench_parser, ours_command, server
from .workload import requests_per_level, run_level

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setup:
    """What every side-by-side benchmark starts from: its levels, its card (the file the
    servers read, and loaded), and the environment the card's CPU plan needs."""

    levels: list[int]
    card_file: Path
    card: ModelCard
    env: dict[str, str]


def setup(args: argparse.Namespace) -> Setup:
    levels = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    card_file = bench_card(args.card, args.out)
    card = load_card(card_file)
    plan = plan_engine(card, prepare_weights(card, args.cache_dir), "cpu")
    return Setup(levels, card_file, card, {**os.environ, **plan.env})


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__ or "", "32,128", rounds=5)
    parser.add_argument("--before", required=True, help="the git revision to compare against")
    args = parser.parse_args(argv)
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
    s = setup(args)
    arms = {
        "before": (18331, {**s.env, "PYTHONPATH": str(tree / "src")}),
        "after": (18332, {**s.env, "PYTHONPATH": str(ROOT / "src")}),
    }
    try:
        with contextlib.ExitStack() as stack:
            front = start_arms(stack, arms, s.card_file, args, "ab")
            ports = {name: port for name, (port, _) in arms.items()}
            rows = interleaved(ports, front, s.card.name, s.levels, args, "A/B")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    write_report(
        args, "ab", rows, ("before", "after"), f"Before: {revision}; after: the working tree."
    )
    return 0


def write_report(
    args: argparse.Namespace,
    name: str,
    rows: list[Summary],
    arms: tuple[str, str],
    intro: str,
) -> None:
    """`rows` as `<name>.json`, and as `<name>.md`: the arms' figures and the paired ratios of
    the second arm to the first (also printed)."""
    levels = [int(c) for c in args.concurrency.split(",")]
    before, after = arms
    (args.out / f"{name}.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    table = markdown(combine(rows), levels, baseline=before)
    table += "\n" + paired_markdown(paired_ratios(rows, levels, after, before), after, before)
    report = (
        f"Machine: {machine()}\n\n{intro} Card: `{args.card}`, {args.rounds} rounds, "
        f"{args.max_tokens} tokens per request, streaming chat completions.\n\n{table}"
    )
    (args.out / f"{name}.md").write_text(report)
    print(report)


def start_arms(
    stack: contextlib.ExitStack,
    arms: dict[str, tuple[int, dict[str, str]]],
    card_file: Path,
    args: argparse.Namespace,
    prefix: str,
) -> dict[str, list[psutil.Process]]:
    """One server per arm (its port and environment), stopped when `stack` closes; each arm's
    front-end processes."""
    return {
        name: front_end(
            stack.enter_context(
                server(
                    name,
                    ours_command(card_file, port, args.cache_dir),
                    arm_env,
                    f"http://127.0.0.1:{port}",
                    args.out / f"{prefix}-{name}.log",
                )
            )
        )
        for name, (port, arm_env) in arms.items()
    }


def interleaved(
    ports: dict[str, int],
    front: dict[str, list[psutil.Process]],
    model: str,
    levels: list[int],
    args: argparse.Namespace,
    desc: str,
) -> list[Summary]:
    """Every arm at every level in each round, the order turning every round; each row with the
    API processes' CPU time it took."""
    rows: list[Summary] = []
    total = args.rounds * len(ports) * sum(args.requests or requests_per_level(c) for c in levels)
    with tqdm(total=total, unit="req", desc=desc) as bar:
        for port in ports.values():  # warm-up, not measured
            run_level(f"http://127.0.0.1:{port}", CHAT, model, 4, 8, args.max_tokens)
        for rnd in range(args.rounds):
            for c in levels:
                order = list(ports) if rnd % 2 == 0 else list(reversed(ports))
                for name in order:
                    n = args.requests or requests_per_level(c)
                    bar.set_postfix(arm=name, concurrency=c, round=rnd + 1)
                    cpu = cpu_seconds(front[name])
                    level = run_level(
                        f"http://127.0.0.1:{ports[name]}", CHAT, model, c, n, args.max_tokens, bar
                    )
                    cpu = cpu_seconds(front[name]) - cpu
                    rows.append(summarize(name, c, rnd + 1, level, cpu))
    return rows


CHAT = "/v1/openai/chat/completions"

if __name__ == "__main__":
    sys.exit(main())
