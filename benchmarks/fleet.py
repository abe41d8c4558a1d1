"""Fleet benchmark: what the front door costs, and what prefix-affine balancing buys.

1. Overhead. A fleet of one replica of the card; the workload's (streaming chat) straight
   to the replica and through the front door (HAProxy), alternating round after round at each
   concurrency; paired ratios of throughput and TTFT p50 (front door over direct).
2. Affinity. A fleet of two replicas, run once with the `prefix` policy and once with
   `roundrobin`; a shared-prefix workload: DOCS long system prompts, each asked QUESTIONS
   questions, in a shuffled order. The prefix-cache hit rate is the two replicas' growth of
   vllm:prefix_cache_hits over vllm:prefix_cache_queries during the run.
3. Sessions. SESSIONS chats of TURNS turns that grow turn by turn and share one system prompt
   (one application's), all sessions' turn t sent together, then turn t + 1: each with its
   `prompt_cache_key` through two replicas (prefix policy), without it (the prompt's start
   decides), round robin, and one replica alone (every session's cache in one place: the upper
   bound). Then, on that one replica, TTFT of long prompts sent once (uncached) and again.

    python -m benchmarks.fleet --card model_cards/dev/tiny-random.yaml --out benchmarks/out
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from tqdm import tqdm

from deepinfra_serve.config.cards import load_card

from .measure import counter, percentile, summarize
from .report import machine
from .servers import bench_parser
from .workload import run, run_level

WORDS = [
    "lamb",
    "chef",
    "oven",
    "sauce",
    "thyme",
    "garlic",
    "butter",
    "slow",
    "roast",
    "braise",
    "market",
    "season",
    "fennel",
    "lemon",
    "pepper",
    "salt",
    "stock",
    "shallot",
    "wine",
    "plate",
    "kitchen",
    "flame",
    "iron",
    "copper",
    "herb",
]


@contextlib.contextmanager
def fleet(
    card: Path, replicas: int, policy: str, port: int, cache_dir: Path, out: Path, tag: str
) -> Iterator[list[str]]:
    """A running fleet of `replicas` of `card`; yields the replicas' base URLs."""
    spec = out / f"fleet-{tag}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "device": "cpu",
                "policy": policy,
                "models": [{"card": str(card.resolve()), "replicas": replicas}],
            }
        )
    )
    cmd = [
        sys.executable, "-m", "deepinfra_serve.cli", "fleet", "--spec", str(spec),
        "--port", str(port), "--cache-dir", str(cache_dir), "--run-dir", str(out / f"run-{tag}"),
    ]  # fmt: skip
    log = (out / f"fleet-{tag}.log").open("wb")
    # A process group of its own, to stop it whole, but the benchmark's session: the kernel's
    # autogroup scheduler shares the CPU between sessions, and a fleet in a session of its own
    # measured 5 times slower than the same fleet in this one.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, process_group=0)
    urls = [f"http://127.0.0.1:{port + 1 + i}" for i in range(replicas)]
    try:
        deadline = time.monotonic() + 600
        while not all(_ready(u) for u in [f"http://127.0.0.1:{port}", *urls]):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the {tag} fleet did not start; see {log.name}")
            time.sleep(0.5)
        time.sleep(2.5)  # the front door's health checks see every replica up
        yield urls
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def shared_prefix_bodies(
    model: str, docs: int, questions: int, max_tokens: int
) -> list[dict[str, Any]]:
    rng = random.Random(7)
    prompts = [
        f"Document {d}: " + " ".join(rng.choice(WORDS) for _ in range(160)) for d in range(docs)
    ]
    work = [(d, q) for d in range(docs) for q in range(questions)]
    rng.shuffle(work)
    return [
        {
            "model": model,
            "messages": [
                {"role": "system", "content": prompts[d]},
                {"role": "user", "content": f"Question {q}: what does the chef cook?"},
            ],
            "max_tokens": max_tokens,
            "temperature": 1.0,
            "seed": d * 1000 + q,
            "stream": True,
        }
        for d, q in work
    ]


SYSTEM = "You are the assistant of one application, and every user's chat starts with this. "


def session_bodies(
    model: str, sessions: int, turn: int, max_tokens: int, keyed: bool
) -> list[dict[str, Any]]:
    """Every session's request at `turn`: the conversation so far (earlier answers stand in
    as a fixed text, so that each request's prompt extends the one before it), and the
    session's `prompt_cache_key` when `keyed`."""
    rng = random.Random(11)
    system = SYSTEM + " ".join(rng.choice(WORDS) for _ in range(40))
    bodies = []
    for s in range(sessions):
        messages = [{"role": "system", "content": system}]
        for t in range(turn + 1):
            words = " ".join(random.Random(s * 100 + t).choice(WORDS) for _ in range(10))
            messages.append({"role": "user", "content": f"Session {s}, turn {t}: {words}"})
            if t < turn:
                messages.append({"role": "assistant", "content": "Noted; go on."})
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True}
        if keyed:
            body["prompt_cache_key"] = f"user{s}-chat{s}"
        bodies.append(body)
    return bodies


def sessions_row(
    name: str, base: str, replicas: list[str], model: str, args: Any, keyed: bool
) -> str:
    hits = counter(replicas, "vllm:prefix_cache_hits_total")
    queries = counter(replicas, "vllm:prefix_cache_queries_total")
    samples = []
    for turn in range(args.turns):
        bodies = session_bodies(model, args.sessions, turn, args.max_tokens, keyed)
        samples += run(base, "/v1/openai/chat/completions", bodies, args.sessions).samples
    hits = counter(replicas, "vllm:prefix_cache_hits_total") - hits
    queries = counter(replicas, "vllm:prefix_cache_queries_total") - queries
    ttfts = [s.ttft for s in samples if s.ok and s.ttft is not None]
    return (
        f"| {name} | {hits / queries:.3f} | {hits:.0f} / {queries:.0f} "
        f"| {percentile(ttfts, 50) * 1000:.1f} | {percentile(ttfts, 99) * 1000:.1f} "
        f"| {sum(not s.ok for s in samples)} |"
    )


def cached_against_uncached(base: str, model: str, prompts: int, tokens: int) -> str:
    """TTFT p50 of long prompts (about `tokens` each) sent one at a time, each new (uncached),
    then each again."""
    rng = random.Random(5)
    probe = {"model": model, "prompt": " ".join(rng.choice(WORDS) for _ in range(100))}
    usage = httpx.post(f"{base}/v1/openai/completions", json={**probe, "max_tokens": 1}).json()
    words = int(tokens * 100 / usage["usage"]["prompt_tokens"])
    bodies = [
        {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": f"Text {i}: " + " ".join(rng.choice(WORDS) for _ in range(words)),
                }
            ],
            "max_tokens": 4,
            "stream": True,
        }
        for i in range(prompts)
    ]
    path = "/v1/openai/chat/completions"
    first = [s.ttft for s in run(base, path, bodies, 1).samples if s.ttft is not None]
    again = [s.ttft for s in run(base, path, bodies, 1).samples if s.ttft is not None]
    return (
        f"| {percentile(first, 50) * 1000:.1f} | {percentile(again, 50) * 1000:.1f} "
        f"| {percentile(again, 50) / percentile(first, 50):.3f} | {len(first)} / {len(again)} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__ or "", "1,8,32", rounds=5)
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--prefix-concurrency", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--parts", default="overhead,affinity,sessions")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    levels = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_card(args.card).name
    path = "/v1/openai/chat/completions"
    port = 18400
    report = [
        f"Machine: {machine()}\n",
        f"Card: `{args.card}`, streaming chat, {args.max_tokens} tokens per request.\n",
    ]
    if "overhead" in parts:
        report += [
            "## Through the front door against straight to the replica\n",
            f"One replica; {args.rounds} alternating rounds; paired ratios, front door / direct "
            "(median, lowest, highest over rounds).\n",
            "| streams | throughput tok/s direct | front door | ratio | TTFT p50 ms direct "
            "| front door | difference ms (median, lowest, highest) |",
            "|---|---|---|---|---|---|---|",
        ]
        per_level = {c: args.requests or max(64, 8 * c) for c in levels}
        total = sum(per_level.values()) * 2 * args.rounds
        with (
            fleet(args.card, 1, "leastconn", port, args.cache_dir, args.out, "overhead") as [
                replica
            ],
            tqdm(total=total, unit="req", desc="front door vs direct") as bar,
        ):
            targets = {"direct": replica, "front door": f"http://127.0.0.1:{port}"}
            for base in targets.values():  # warm-up
                run_level(base, path, model, 4, 8, args.max_tokens)
            rows: dict[tuple[str, int], list[Any]] = {}
            for rnd in range(args.rounds):
                for c in levels:
                    order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
                    for name in order:
                        bar.set_postfix(target=name, streams=c, round=rnd + 1)
                        level = run_level(
                            targets[name], path, model, c, per_level[c], args.max_tokens, bar
                        )
                        rows.setdefault((name, c), []).append(
                            summarize(name, c, rnd + 1, level, 0.0)
                        )
        for c in levels:
            direct, front = rows[("direct", c)], rows[("front door", c)]
            ratios = [
                f.output_tokens_per_s / d.output_tokens_per_s
                for f, d in zip(front, direct, strict=True)
            ]
            diffs = [f.ttft_p50_ms - d.ttft_p50_ms for f, d in zip(front, direct, strict=True)]

            def med(xs: list[float]) -> float:
                return statistics.median(xs)

            report.append(
                f"| {c} | {med([d.output_tokens_per_s for d in direct]):.0f} "
                f"| {med([f.output_tokens_per_s for f in front]):.0f} "
                f"| {med(ratios):.3f} ({min(ratios):.3f}, {max(ratios):.3f}) "
                f"| {med([d.ttft_p50_ms for d in direct]):.1f} "
                f"| {med([f.ttft_p50_ms for f in front]):.1f} "
                f"| {med(diffs):+.1f} ({min(diffs):+.1f}, {max(diffs):+.1f}) |"
            )
        errors = sum(r.errors for rs in rows.values() for r in rs)
        report.append(f"\nErrors: {errors}.\n")

    if "affinity" in parts:
        report += [
            "## Prefix-affine balancing against round robin\n",
            f"Two replicas; {args.docs} system prompts of about 160 words, "
            f"{args.questions} questions each, shuffled, {args.prefix_concurrency} streams.\n",
            "| policy | prefix-cache hit rate | hits / queries (tokens) | TTFT p50 ms "
            "| TTFT p99 ms | errors |",
            "|---|---|---|---|---|---|",
        ]
        for policy in ("prefix", "roundrobin"):
            with fleet(args.card, 2, policy, port, args.cache_dir, args.out, policy) as replicas:
                hits, queries = (
                    counter(replicas, "vllm:prefix_cache_hits_total"),
                    counter(replicas, "vllm:prefix_cache_queries_total"),
                )
                bodies = shared_prefix_bodies(model, args.docs, args.questions, args.max_tokens)
                samples = run(
                    f"http://127.0.0.1:{port}", path, bodies, args.prefix_concurrency
                ).samples
                hits = counter(replicas, "vllm:prefix_cache_hits_total") - hits
                queries = counter(replicas, "vllm:prefix_cache_queries_total") - queries
            ttfts = [s.ttft for s in samples if s.ok and s.ttft is not None]
            report.append(
                f"| {policy} | {hits / queries:.3f} | {hits:.0f} / {queries:.0f} "
                f"| {percentile(ttfts, 50) * 1000:.1f} | {percentile(ttfts, 99) * 1000:.1f} "
                f"| {sum(not s.ok for s in samples)} |"
            )
    if "sessions" in parts:
        report += [
            "## Sessions: prompt_cache_key affinity, the prompt's start, round robin, one "
            "replica\n",
            f"{args.sessions} chats of {args.turns} turns sharing one system prompt, all turn t "
            "together, then turn t + 1; hit rate over both replicas' prefix-cache queries.\n",
            "| arm | prefix-cache hit rate | hits / queries (tokens) | TTFT p50 ms | TTFT p99 ms "
            "| errors |",
            "|---|---|---|---|---|---|",
        ]
        front = f"http://127.0.0.1:{port}"
        arms = [
            ("prompt_cache_key, prefix policy, 2 replicas", 2, "prefix", True),
            ("prompt start, prefix policy, 2 replicas", 2, "prefix", False),
            ("round robin, 2 replicas", 2, "roundrobin", True),
            ("one replica alone", 1, "prefix", True),
        ]
        for name, count, policy, keyed in arms:
            tag = f"sessions-{count}-{policy}-{keyed}"
            with fleet(args.card, count, policy, port, args.cache_dir, args.out, tag) as replicas:
                report.append(sessions_row(name, front, replicas, model, args, keyed))
                if count == 1:
                    cached = cached_against_uncached(replicas[0], model, 16, 880)
        report += [
            "\nOne replica, 16 chat prompts of about 900 tokens, one at a time, each sent new "
            "and then again (TTFT: time to the first streamed text):\n",
            "| TTFT p50 ms uncached | cached | cached / uncached | requests |",
            "|---|---|---|---|",
            cached,
        ]
    text = "\n".join(report) + "\n"
    (args.out / "fleet.md").write_text(text)
    print(text)
    print(f"written: {args.out / 'fleet.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
