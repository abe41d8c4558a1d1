"""Side-by-side benchmark: this service against vLLM's own OpenAI server.

Both servers run the same model card with the same engine arguments (vLLM's flags are derived
from the card's engine plan), on the same machine, and get the same workload: streaming chat
completions with the same prompt, sampling and per-request seeds. Measurements alternate
between the two servers, round after round, at each concurrency, so that drift in the machine
hits both alike. The ratios are paired: ours over vLLM's within each round (the two
measurements minutes apart at most), then the median over rounds, with the lowest and highest.

    python benchmarks/bench.py --card model_cards/dev/tiny-random.yaml --out benchmarks/out
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from tqdm import tqdm

from deepinfra_serve.cards import load_card
from deepinfra_serve.engine_args import plan_engine
from deepinfra_serve.weights import prepare_weights

PROMPT = [{"role": "user", "content": "Hello! Tell me a long story about a lamb and a chef."}]


@dataclass
class Sample:
    ok: bool
    ttft: float | None = None  # None: the answer had no text (EOS first), so no first token
    itl: float | None = None
    latency: float = 0.0
    tokens: int = 0
    error: str = ""  # why it failed: "HTTP 429", an httpx error's class, "no [DONE]", ...


@dataclass
class Summary:
    server: str
    concurrency: int
    round: int
    requests: int
    errors: int
    output_tokens_per_s: float
    requests_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    itl_p50_ms: float
    itl_p99_ms: float
    api_cpu_ms_per_1k_tokens: float
    error_kinds: dict[str, int]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def vllm_flags(kwargs: dict[str, Any]) -> list[str]:
    """The same engine arguments as vLLM server flags."""
    flags: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


@contextmanager
def server(
    name: str, cmd: list[str], env: dict[str, str], url: str, log: Path
) -> Iterator[psutil.Process]:
    """The server, started and healthy; yields its API process (the engine is a child)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start in 600 s; see {log}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """SSE lines end at LF only; `aiter_lines` would also split inside JSON strings that hold
    U+2028 or U+0085, which generated text can."""
    rest = b""
    async for chunk in chunks:
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            yield line
    if rest:
        yield rest


async def one_request(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Sample:
    started = time.perf_counter()
    first = last = None
    tokens = 0
    done = False
    try:
        async with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return Sample(ok=False, error=f"HTTP {r.status_code}")
            async for line in sse_lines(r.aiter_bytes()):
                if line == b"data: [DONE]":
                    done = True
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return Sample(ok=False, error=f"error event {chunk['error'].get('code')}")
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk.get("choices", []):
                    if choice.get("delta", {}).get("content"):
                        now = time.perf_counter()
                        first = first or now
                        last = now
    except httpx.HTTPError as exc:
        return Sample(ok=False, error=type(exc).__name__)
    if not done:
        return Sample(ok=False, error="no [DONE]")
    end = time.perf_counter()
    if first is None or last is None:  # a complete answer without text
        return Sample(ok=True, latency=end - started, tokens=tokens)
    itl = (last - first) / (tokens - 1) if tokens > 1 else None
    return Sample(ok=True, ttft=first - started, itl=itl, latency=end - started, tokens=tokens)


async def run_level(
    base: str,
    path: str,
    model: str,
    concurrency: int,
    requests: int,
    max_tokens: int,
    bar: tqdm,
) -> tuple[list[Sample], float]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    samples: list[Sample] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = {
                "model": model,
                "messages": PROMPT,
                "max_tokens": max_tokens,
                "temperature": 1.0,
                "seed": 1000 + i,  # the same request i for both servers
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            samples.append(await one_request(client, path, body))
            bar.update(1)

    limits = httpx.Limits(max_connections=concurrency + 8)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return samples, elapsed


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of the API process itself (all its threads; not the engine's processes)."""
    t = process.cpu_times()
    return t.user + t.system


def summarize(
    server_name: str,
    concurrency: int,
    rnd: int,
    samples: list[Sample],
    elapsed: float,
    api_cpu_s: float,
) -> Summary:
    ok = [s for s in samples if s.ok]
    ttft = [s.ttft * 1000 for s in ok if s.ttft is not None]
    itl = [s.itl * 1000 for s in ok if s.itl is not None]
    return Summary(
        server=server_name,
        concurrency=concurrency,
        round=rnd,
        requests=len(samples),
        errors=len(samples) - len(ok),
        output_tokens_per_s=sum(s.tokens for s in ok) / elapsed,
        requests_per_s=len(ok) / elapsed,
        ttft_p50_ms=percentile(ttft, 50),
        ttft_p99_ms=percentile(ttft, 99),
        itl_p50_ms=percentile(itl, 50),
        itl_p99_ms=percentile(itl, 99),
        api_cpu_ms_per_1k_tokens=api_cpu_s * 1e6 / max(1, sum(s.tokens for s in ok)),
        error_kinds=dict(Counter(s.error for s in samples if not s.ok)),
    )


def combine(rows: list[Summary]) -> dict[tuple[str, int], dict[str, float]]:
    """Median over rounds of each figure, per server and concurrency; errors summed."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    keys = {(r.server, r.concurrency) for r in rows}
    for key in keys:
        group = [r for r in rows if (r.server, r.concurrency) == key]
        figures = {
            f: statistics.median(getattr(r, f) for r in group)
            for f in (
                "output_tokens_per_s",
                "requests_per_s",
                "ttft_p50_ms",
                "ttft_p99_ms",
                "itl_p50_ms",
                "itl_p99_ms",
                "api_cpu_ms_per_1k_tokens",
            )
        }
        figures["errors"] = sum(r.errors for r in group)
        figures["requests"] = sum(r.requests for r in group)
        out[key] = figures
    return out


def markdown(combined: dict[tuple[str, int], dict[str, float]], levels: list[int]) -> str:
    lines = [
        "| concurrency | server | output tok/s | req/s | TTFT p50 ms | TTFT p99 ms | "
        "ITL p50 ms | ITL p99 ms | API CPU ms / 1k tokens | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in levels:
        for name in ("deepinfra-serve", "vllm-server"):
            f = combined[(name, c)]
            lines.append(
                f"| {c} | {name} | {f['output_tokens_per_s']:.1f} | {f['requests_per_s']:.2f} | "
                f"{f['ttft_p50_ms']:.1f} | {f['ttft_p99_ms']:.1f} | {f['itl_p50_ms']:.2f} | "
                f"{f['itl_p99_ms']:.2f} | {f['api_cpu_ms_per_1k_tokens']:.0f} | "
                f"{int(f['errors'])}/{int(f['requests'])} |"
            )
    lines += [
        "",
        "| concurrency | throughput ratio (ours / vLLM) | TTFT p50 ratio (ours / vLLM) |",
        "|---:|---:|---:|",
    ]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.3f}" if b else "n/a"

    for c in levels:
        ours, theirs = combined[("deepinfra-serve", c)], combined[("vllm-server", c)]
        lines.append(
            f"| {c} | {ratio(ours['output_tokens_per_s'], theirs['output_tokens_per_s'])} | "
            f"{ratio(ours['ttft_p50_ms'], theirs['ttft_p50_ms'])} |"
        )
    return "\n".join(lines) + "\n"


PAIRED = {  # figure -> column title of the paired table
    "output_tokens_per_s": "throughput",
    "ttft_p50_ms": "TTFT p50",
    "api_cpu_ms_per_1k_tokens": "API process CPU per token",
}


def paired_ratios(rows: list[Summary], levels: list[int]) -> dict[int, dict[str, list[float]]]:
    """Ours / vLLM's per round, figure by figure: pairs measured back to back."""
    out: dict[int, dict[str, list[float]]] = {}
    by_key = {(r.server, r.concurrency, r.round): r for r in rows}
    for c in levels:
        ratios: dict[str, list[float]] = {f: [] for f in PAIRED}
        for rnd in sorted({r.round for r in rows}):
            ours = by_key.get(("deepinfra-serve", c, rnd))
            theirs = by_key.get(("vllm-server", c, rnd))
            if ours is None or theirs is None:
                continue
            for f in PAIRED:
                if getattr(theirs, f):
                    ratios[f].append(getattr(ours, f) / getattr(theirs, f))
        out[c] = ratios
    return out


def paired_markdown(ratios: dict[int, dict[str, list[float]]]) -> str:
    def cell(values: list[float]) -> str:
        if not values:
            return "n/a"
        return (
            f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f}, "
            f"{len(values)} rounds)"
        )

    titles = " | ".join(f"{t} ratio, paired median (range)" for t in PAIRED.values())
    lines = [f"| concurrency | {titles} |", "|---:|" + "---:|" * len(PAIRED)]
    for c, r in ratios.items():
        lines.append(f"| {c} | " + " | ".join(cell(r[f]) for f in PAIRED) + " |")
    return "\n".join(lines) + "\n"


def plot(combined: dict[tuple[str, int], dict[str, float]], levels: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, style in (("deepinfra-serve", "o-"), ("vllm-server", "s--")):
        left.plot(
            levels, [combined[(name, c)]["output_tokens_per_s"] for c in levels], style, label=name
        )
        right.plot(levels, [combined[(name, c)]["ttft_p50_ms"] for c in levels], style, label=name)
    for ax, title, unit in (
        (left, "Output throughput", "tokens / s"),
        (right, "Time to first token, p50", "ms"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, no GPU; {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


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
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    card = load_card(args.card)
    model_dir = prepare_weights(card, args.cache_dir)
    plan = plan_engine(card, model_dir, "cpu")
    env = {**os.environ, **plan.env}
    ours_port, vllm_port = 18311, 18312
    ours_cmd = [
        sys.executable,
        "-m",
        "deepinfra_serve.cli",
        "serve",
        "--card",
        str(args.card),
        "--host",
        "127.0.0.1",
        "--port",
        str(ours_port),
        "--cache-dir",
        str(args.cache_dir),
        "--device",
        "cpu",
    ]
    # vLLM's server with the very engine arguments the card's plan gives this service.
    kwargs = dict(plan.kwargs)
    model = kwargs.pop("model")
    vllm_cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(vllm_port),
        *vllm_flags(kwargs),
    ]
    if card.chat_template is not None:  # the card's template, as this service renders it
        template = args.out / "chat_template.jinja"
        template.write_text(card.chat_template)
        vllm_cmd += ["--chat-template", str(template)]
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
