"""Where the API process spends its CPU per token: py-spy samples it under the streaming chat
workload and the samples are attributed to this service's modules.

Each sample is charged to its innermost frame in `deepinfra_serve` (with what that frame
called), or, when the stack has none below the command line's event loop, to the library it
is in (uvicorn, starlette, asyncio, vLLM's client side, ...); the table lists the shares, so a
change on the hot path shows where it moved CPU.

    python -m benchmarks.profile --card model_cards/dev/tiny-random.yaml --out benchmarks/out
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from deepinfra_serve.cards import load_card
from deepinfra_serve.engine_args import plan_engine
from deepinfra_serve.weights import prepare_weights

from .servers import ours_command, server
from .workload import run_level

_LIBRARIES = ("uvicorn", "starlette", "fastapi", "asyncio", "vllm", "zmq", "msgspec", "orjson")


def attribute(stack: str) -> str:
    """The module a collapsed py-spy stack ("f (path:line);g (path:line)") is charged to."""
    frames = stack.split(";")
    for frame in reversed(frames):
        if "deepinfra_serve/" in frame and "deepinfra_serve/cli" not in frame:  # cli: the loop
            path = frame[frame.index("deepinfra_serve/") :].split(":")[0]
            return path.removesuffix(".py") + ":" + frame.split(" (")[0]
    for frame in reversed(frames):
        for lib in _LIBRARIES:
            if f"/{lib}/" in frame or f"{lib}/" in frame.split("(")[-1]:
                return lib
    return "other"


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
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    card = load_card(args.card)
    plan = plan_engine(card, prepare_weights(card, args.cache_dir), "cpu")
    env = {**os.environ, **plan.env}
    port = 18313
    base = f"http://127.0.0.1:{port}"
    raw = args.out / "profile.collapsed"
    cmd = ours_command(args.card, port, args.cache_dir)
    with server("deepinfra-serve", cmd, env, base, args.out / "profile-server.log") as api:
        path = "/v1/openai/chat/completions"
        asyncio.run(run_level(base, path, card.name, 4, 8, args.max_tokens, tqdm(disable=True)))
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with tqdm(total=args.requests, unit="req", desc="profile") as bar:
                samples, _ = asyncio.run(
                    run_level(
                        base, path, card.name, args.concurrency, args.requests, args.max_tokens, bar
                    )
                )
        finally:
            spy.send_signal(2)  # py-spy writes its file on SIGINT
            spy.wait(timeout=60)
    tokens = sum(s.tokens for s in samples if s.ok)
    shares: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        shares[attribute(stack)] += int(count)
    total = sum(shares.values()) or 1
    lines = [
        f"{len(samples)} requests, {tokens} tokens, {total} samples of the API process "
        f"at 200 Hz ({total / 200 * 1e6 / max(1, tokens):.0f} sampled ms / 1k tokens)",
        "",
        "| where | share of samples |",
        "|---|---:|",
        *(f"| {k} | {v / total:.1%} |" for k, v in shares.most_common(args.top)),
    ]
    report = "\n".join(lines) + "\n"
    (args.out / "profile.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
