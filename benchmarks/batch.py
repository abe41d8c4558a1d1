"""The batch arm: what the Batch API costs and takes, on this service alone.

1. Lines per second: a batch of N chat lines against the same N requests sent online by a
   client at the card's concurrency, in rounds whose order alternates. Target: at least 0.9x.
2. Online beside a batch: 16 streaming default streams alone, and with a large batch running
   (started first, cancelled after), in rounds whose order alternates. Targets: online TTFT p50
   at most 1.15x, online throughput at least 0.9x of the load alone.
3. The store's cost per line, SQLite against PostgreSQL (Debian's, a throwaway cluster on
   loopback): a batch's lines written, claimed, finished and finalized, timed per line.

    python -m benchmarks.batch --card model_cards/dev/tiny-random.yaml --out benchmarks/out
"""

from __future__ import annotations

import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
import uvloop
from tqdm import tqdm

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.weights import prepare_weights
from deepinfra_serve.store import batches, claims
from deepinfra_serve.store.batches import BatchRow, NewLine
from deepinfra_serve.store.claims import LineResult
from deepinfra_serve.store.database import Store

from .measure import percentile
from .servers import bench_card, bench_parser, ours_command, server
from .workload import PROMPT, chat_bodies, drive

PATH = "/v1/openai/chat/completions"
ENDPOINT = "/v1/chat/completions"


def _lines(model: str, n: int, max_tokens: int, tag: str) -> bytes:
    rows = []
    for i in range(n):
        body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "seed": 1000 + i}
        rows.append(
            json.dumps({"custom_id": f"{tag}-{i}", "method": "POST", "url": ENDPOINT, "body": body})
        )
    return ("\n".join(rows) + "\n").encode()


def _start_batch(client: openai.OpenAI, data: bytes) -> str:
    upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h"
    )
    return batch.id


def _until_ended(client: openai.OpenAI, batch_id: str) -> Any:
    while (batch := client.batches.retrieve(batch_id)).status not in (
        "completed",
        "failed",
        "expired",
        "cancelled",
    ):
        time.sleep(0.2)
    return batch


def batch_rate(client: openai.OpenAI, model: str, n: int, max_tokens: int, tag: str) -> float:
    data = _lines(model, n, max_tokens, tag)
    started = time.perf_counter()
    done = _until_ended(client, _start_batch(client, data))
    assert done.status == "completed" and done.request_counts.completed == n, done
    return n / (time.perf_counter() - started)


def online_rate(base: str, model: str, n: int, max_tokens: int, concurrency: int) -> float:
    bodies = chat_bodies(model, n, max_tokens)
    samples, seconds = uvloop.run(drive(base, PATH, bodies, concurrency, tqdm(disable=True)))
    assert all(s.ok for s in samples), [s.error for s in samples if not s.ok][:3]
    return n / seconds


def online_load(base: str, model: str, max_tokens: int) -> dict[str, float]:
    bodies = chat_bodies(model, 16 * 12, max_tokens)
    samples, seconds = uvloop.run(drive(base, PATH, bodies, 16, tqdm(disable=True)))
    ok = [s for s in samples if s.ok]
    return {
        "ttft_p50_s": percentile([s.ttft for s in ok if s.ttft is not None], 50),
        "tokens_per_s": sum(s.tokens for s in ok) / seconds,
        "failures": len(samples) - len(ok),
    }


def store_cost(url: str, data_dir: Path, n: int) -> float:
    """Seconds of store work per line: written, claimed 25 at a time, finished, finalized."""
    store = Store.open(url, data_dir)
    try:
        now = int(time.time())
        batch_id = f"bench-{now}-{os.getpid()}"
        row = BatchRow(
            batch_id, "bench", "bench", ENDPOINT, "file", "24h", "in_progress", None, None,
            None, None, now, now, now + 3600, None, None, None, None, None, None,
        )  # fmt: skip
        body = json.dumps({"model": "bench", "messages": PROMPT, "max_tokens": 64})
        result = json.dumps({"response": {"status_code": 200, "body": {"x": "y" * 400}}})
        started = time.perf_counter()
        lines = (NewLine(i, "bench", f"c{i}", body, f"k{i % 7}") for i in range(1, n + 1))
        batches.create(store, batch_id, lines, lambda: row)
        while claimed := claims.claim(store, "bench", "bench-runner", 25, 60):
            for line in claimed:
                claims.finish(store, line, LineResult("done", result, 30, 0, 64, 1e-6))
        assert batches.finalize(store, batch_id, 3600, lambda state, custom_id: "{}")
        return (time.perf_counter() - started) / n
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__ or "", "200", rounds=3)
    parser.add_argument("--lines", type=int, default=2000)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    card_file = bench_card(args.card, args.out)
    card = load_card(card_file)
    prepare_weights(card, args.cache_dir)
    port = 8310
    base = f"http://127.0.0.1:{port}"
    cmd = ours_command(card_file, port, args.cache_dir)
    concurrency = int(args.concurrency)
    results: dict[str, Any] = {"lines": args.lines, "max_tokens": args.max_tokens}
    data_dir = Path(tempfile.mkdtemp(prefix="bench-store-"))
    env = {**os.environ, "DEEPINFRA_SERVE_DATA_DIR": str(data_dir)}
    with (
        server("batch", cmd, env, base, args.out / "batch.log"),
        openai.OpenAI(base_url=f"{base}/v1/openai", api_key="x", max_retries=0) as client,
    ):
        rates = []
        for i in range(args.rounds):
            order = ["batch", "online"] if i % 2 == 0 else ["online", "batch"]
            got: dict[str, float] = {}
            for arm in order:
                if arm == "batch":
                    got[arm] = batch_rate(client, card.name, args.lines, args.max_tokens, f"r{i}")
                else:
                    got[arm] = online_rate(
                        base, card.name, args.lines, args.max_tokens, concurrency
                    )
            rates.append(got)
        ratio = [r["batch"] / r["online"] for r in rates]
        results["lines_per_s"] = {"rounds": rates, "ratio_median": statistics.median(ratio)}
        print(
            f"batch lines/s over online requests/s at concurrency {concurrency}: median "
            f"{statistics.median(ratio):.3f} ({min(ratio):.3f}-{max(ratio):.3f}; target >= 0.9)"
        )

        pairs = []
        for i in range(args.rounds):
            order = [False, True] if i % 2 == 0 else [True, False]
            got2: dict[bool, dict[str, float]] = {}
            for with_batch in order:
                batch_id = None
                if with_batch:
                    data = _lines(card.name, 20 * args.lines, args.max_tokens, f"bg{i}")
                    batch_id = _start_batch(client, data)
                    time.sleep(2)  # its lines running
                got2[with_batch] = online_load(base, card.name, args.max_tokens)
                if batch_id is not None:
                    client.batches.cancel(batch_id)
                    _until_ended(client, batch_id)
            pairs.append({"without": got2[False], "with": got2[True]})
        ttft = [p["with"]["ttft_p50_s"] / p["without"]["ttft_p50_s"] for p in pairs]
        tput = [p["with"]["tokens_per_s"] / p["without"]["tokens_per_s"] for p in pairs]
        results["online_beside_batch"] = {
            "rounds": pairs,
            "ttft_p50_ratio_median": statistics.median(ttft),
            "throughput_ratio_median": statistics.median(tput),
        }
        print(
            f"16 online streams with a batch / without: TTFT p50 {statistics.median(ttft):.3f} "
            f"({min(ttft):.3f}-{max(ttft):.3f}; target <= 1.15), throughput "
            f"{statistics.median(tput):.3f} ({min(tput):.3f}-{max(tput):.3f}; target >= 0.9)"
        )

    costs: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    from tests.helpers import postgres_cluster

    with postgres_cluster() as pg_url:
        for _ in range(args.rounds):
            costs["sqlite"].append(store_cost("", Path(tempfile.mkdtemp()), args.lines))
            costs["postgresql"].append(store_cost(pg_url, data_dir, args.lines))
    results["store_seconds_per_line"] = costs
    print(
        "store per line: "
        + ", ".join(f"{k} {statistics.median(v) * 1e3:.2f} ms" for k, v in costs.items())
    )
    (args.out / "batch.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
