"""Results as Markdown tables and a plot, with the machine they were measured on."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

from .measure import PAIRED

VLLM = "vllm-server"


def servers(combined: dict[tuple[str, int], dict[str, float]], baseline: str = VLLM) -> list[str]:
    """The servers measured, this service's arms first and the baseline (vLLM's) last."""
    names = sorted({name for name, _ in combined})
    return [n for n in names if n != baseline] + [baseline]


def markdown(
    combined: dict[tuple[str, int], dict[str, float]], levels: list[int], baseline: str = VLLM
) -> str:
    lines = [
        "| concurrency | server | output tok/s | req/s | TTFT p50 ms | TTFT p99 ms | "
        "ITL p50 ms | ITL p99 ms | API CPU ms / 1k tokens | load generator CPU ms / 1k tokens "
        "| errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in levels:
        for name in servers(combined, baseline):
            f = combined[(name, c)]
            lines.append(
                f"| {c} | {name} | {f['output_tokens_per_s']:.1f} | {f['requests_per_s']:.2f} | "
                f"{f['ttft_p50_ms']:.1f} | {f['ttft_p99_ms']:.1f} | {f['itl_p50_ms']:.2f} | "
                f"{f['itl_p99_ms']:.2f} | {f['api_cpu_ms_per_1k_tokens']:.0f} | "
                f"{f['client_cpu_ms_per_1k_tokens']:.0f} | "
                f"{int(f['errors'])}/{int(f['requests'])} |"
            )
    lines += [
        "",
        f"| concurrency | server | throughput ratio (over {baseline}) | TTFT p50 ratio (over "
        f"{baseline}) |",
        "|---:|---|---:|---:|",
    ]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.3f}" if b else "n/a"

    for c in levels:
        theirs = combined[(baseline, c)]
        for name in servers(combined, baseline)[:-1]:
            ours = combined[(name, c)]
            lines.append(
                f"| {c} | {name} | "
                f"{ratio(ours['output_tokens_per_s'], theirs['output_tokens_per_s'])} | "
                f"{ratio(ours['ttft_p50_ms'], theirs['ttft_p50_ms'])} |"
            )
    return "\n".join(lines) + "\n"


def paired_markdown(
    ratios: dict[int, dict[str, list[float]]], name: str, baseline: str = "vLLM"
) -> str:
    def cell(values: list[float]) -> str:
        if not values:
            return "n/a"
        return (
            f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f}, "
            f"{len(values)} rounds)"
        )

    titles = " | ".join(f"{t} ratio, paired median (range)" for t in PAIRED.values())
    lines = [
        f"{name} / {baseline}:",
        "",
        f"| concurrency | {titles} |",
        "|---:|" + "---:|" * len(PAIRED),
    ]
    for c, r in ratios.items():
        lines.append(f"| {c} | " + " | ".join(cell(r[f]) for f in PAIRED) + " |")
    return "\n".join(lines) + "\n"


def plot(combined: dict[tuple[str, int], dict[str, float]], levels: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, style in zip(servers(combined), ("o-", "^-", "d-", "s--"), strict=False):
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


def limit_markdown(
    combined: dict[tuple[str, int], dict[str, float]],
    levels: list[int],
    limit: dict[int, dict[str, float]],
) -> str:
    """Each server's throughput as a fraction of the engine driven in-process (no HTTP)."""
    names = servers(combined)
    lines = [
        "| concurrency | limit: AsyncLLM in-process, tok/s | its client-side CPU ms / 1k tokens | "
        + " | ".join(f"{n} / limit" for n in names)
        + " |",
        "|---:|---:|---:|" + "---:|" * len(names),
    ]
    for c in levels:
        if c not in limit:
            continue
        cap = limit[c]["output_tokens_per_s"]
        floor = limit[c].get("client_cpu_ms_per_1k_tokens")
        shares = " | ".join(f"{combined[(n, c)]['output_tokens_per_s'] / cap:.3f}" for n in names)
        lines.append(f"| {c} | {cap:.0f} | {'-' if floor is None else f'{floor:.0f}'} | {shares} |")
    return "\n".join(lines) + "\n"
