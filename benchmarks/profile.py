"""Where the API process spends its CPU per token: py-spy samples it (only while it holds the
GIL, so a loop waiting in epoll is not counted) under the streaming chat workload, and the
process's own CPU time is read before and after.

Two tables: the functions the samples were in (self), and the functions on the stack
(inclusive, which is how much a call costs with everything below it), so a change on the hot
path shows where it moved CPU.

    python -m benchmarks.profile --card model_cards/dev/tiny-random.yaml --out benchmarks/out
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.engine_args import plan_engine
from deepinfra_serve.engine.weights import prepare_weights

from .servers import bench_card, ours_command, server
from .workload import run_level


def frame_name(frame: str) -> str:
    """ "f (/x/site-packages/pkg/mod.py:12)" -> "f (pkg/mod.py)"."""
    function, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3", "src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{function} ({path})"


def shares(collapsed: str) -> tuple[int, Counter[str], Counter[str]]:
    """Samples in all, and per function: self (innermost frame) and inclusive counts."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        names = [frame_name(f) for f in stack.split(";")]
        own[names[-1]] += n
        for name in set(names):
            under[name] += n
    return total, own, under


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--card", type=Path, default=Path("model_cards/dev/tiny-random.yaml"))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "deepinfra-serve"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    parser.add_argument("--src", type=Path, help="serve from this src/ (another checkout's)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.card = bench_card(args.card, args.out)
    card = load_card(args.card)
    plan = plan_engine(card, prepare_weights(card, args.cache_dir), "cpu")
    env = {**os.environ, **plan.env}
    if args.src is not None:  # another checkout of this service, for a before/after profile
        env["PYTHONPATH"] = str(args.src.resolve())
    port = 18313
    base = f"http://127.0.0.1:{port}"
    raw = args.out / "profile.collapsed"
    cmd = ours_command(args.card, port, args.cache_dir)
    with server("deepinfra-serve", cmd, env, base, args.out / "profile-server.log") as api:
        path = "/v1/openai/chat/completions"
        run_level(base, path, card.name, 4, 8, args.max_tokens)
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "-p",
                str(api.pid),
                "-f",
                "raw",
                "-o",
                str(raw),
                "-r",
                "200",
                "--gil",  # only samples holding the GIL: CPU, not a loop waiting in epoll
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cpu = api.cpu_times()
        try:
            with tqdm(total=args.requests, unit="req", desc="profile") as bar:
                samples = run_level(
                    base, path, card.name, args.concurrency, args.requests, args.max_tokens, bar
                ).samples
        finally:
            spy.send_signal(2)  # py-spy writes its file on SIGINT
            spy.wait(timeout=60)
        used = api.cpu_times()
        cpu_s = used.user + used.system - cpu.user - cpu.system
    tokens = sum(s.tokens for s in samples if s.ok)
    total, own, under = shares(raw.read_text())
    total = total or 1
    lines = [
        f"{len(samples)} requests, {tokens} tokens, {total} samples of the API process "
        f"at 200 Hz ({total / 200 * 1e6 / max(1, tokens):.0f} sampled ms / 1k tokens); "
        f"the API process used {cpu_s * 1e6 / max(1, tokens):.0f} ms of CPU / 1k tokens",
        "",
        "| self | share of samples |",
        "|---|---:|",
        *(f"| {k} | {v / total:.1%} |" for k, v in own.most_common(args.top)),
        "",
        "| inclusive | share of samples |",
        "|---|---:|",
        *(f"| {k} | {v / total:.1%} |" for k, v in under.most_common(2 * args.top)),
    ]
    report = "\n".join(lines) + "\n"
    (args.out / "profile.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
