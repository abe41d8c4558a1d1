"""Figures from samples: per run, medians over rounds, and ratios paired round by round."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

import httpx
import psutil

from .workload import Level


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
    client_cpu_ms_per_1k_tokens: float
    error_kinds: dict[str, int]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def counter(urls: list[str], name: str) -> float:
    """The sum of a metric's samples over the servers at `urls`."""
    total = 0.0
    for url in urls:
        for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
    return total


def front_end(root: psutil.Process) -> list[psutil.Process]:
    """A server's front-end processes: the one it was started as and, when it runs several
    API processes (spawned by multiprocessing), those; never the engine core or its workers."""
    spawned = [p for p in root.children() if any("spawn_main" in part for part in p.cmdline())]
    return [root, *spawned]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """CPU time of the front-end processes (all their threads; not the engine's processes)."""
    total = 0.0
    for process in processes:
        t = process.cpu_times()
        total += t.user + t.system
    return total


def summarize(
    server_name: str,
    concurrency: int,
    rnd: int,
    level: Level,
    api_cpu_s: float,
) -> Summary:
    samples, elapsed = level.samples, level.elapsed
    ok = [s for s in samples if s.ok]
    tokens = max(1, sum(s.tokens for s in ok))
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
        api_cpu_ms_per_1k_tokens=api_cpu_s * 1e6 / tokens,
        client_cpu_ms_per_1k_tokens=level.client_cpu_s * 1e6 / tokens,
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
                "client_cpu_ms_per_1k_tokens",
            )
        }
        figures["errors"] = sum(r.errors for r in group)
        figures["requests"] = sum(r.requests for r in group)
        out[key] = figures
    return out


PAIRED = {  # figure -> column title of the paired table
    "output_tokens_per_s": "throughput",
    "ttft_p50_ms": "TTFT p50",
    "api_cpu_ms_per_1k_tokens": "API process CPU per token",
}


def paired_ratios(
    rows: list[Summary],
    levels: list[int],
    ours_name: str = "deepinfra-serve",
    baseline: str = "vllm-server",
) -> dict[int, dict[str, list[float]]]:
    """Ours / the baseline's (vLLM's) per round, figure by figure: pairs measured back to
    back."""
    out: dict[int, dict[str, list[float]]] = {}
    by_key = {(r.server, r.concurrency, r.round): r for r in rows}
    for c in levels:
        ratios: dict[str, list[float]] = {f: [] for f in PAIRED}
        for rnd in sorted({r.round for r in rows}):
            ours = by_key.get((ours_name, c, rnd))
            theirs = by_key.get((baseline, c, rnd))
            if ours is None or theirs is None:
                continue
            for f in PAIRED:
                if getattr(theirs, f):
                    ratios[f].append(getattr(ours, f) / getattr(theirs, f))
        out[c] = ratios
    return out
