"""The usage ledger's cost: this service with the ledger on (every billed request queued and
written to its SQLite store) against off (`DEEPINFRA_SERVE_USAGE_LEDGER=false`), the same
card, engine arguments and workload, in interleaved rounds (`ab.interleaved`). Paired ratios
(on / off) of API-process CPU per 1,000 tokens, throughput and TTFT p50; target: within 3 %.

Then what one entry costs the API process on its own, which a shared machine's rounds cannot
resolve to a few percent: handing it over (`Ledger.add`) and its share of a group's write
(`store.usage.write`, groups of 25 on SQLite), against the API CPU per request measured above.

    python -m benchmarks.ledger --concurrency 32,128 --rounds 5
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from deepinfra_serve.observability.ledger import Ledger, LedgerEntry
from deepinfra_serve.store import usage
from deepinfra_serve.store.database import Store

from .ab import interleaved, setup, start_arms, write_report
from .measure import counter
from .servers import bench_parser


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__ or "", "32,128", rounds=5)
    args = parser.parse_args(argv)
    s = setup(args)
    env = s.env
    arms = {
        "off": (18341, {**env, "DEEPINFRA_SERVE_USAGE_LEDGER": "false"}),
        "on": (18342, env),
    }
    for _, arm_env in arms.values():  # a store of its own, empty at start
        arm_env["DEEPINFRA_SERVE_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-ledger-")
    with contextlib.ExitStack() as stack:
        front = start_arms(stack, arms, s.card_file, args, "ledger")
        ports = {name: port for name, (port, _) in arms.items()}
        rows = interleaved(ports, front, s.card.name, s.levels, args, "ledger")
        on = [f"http://127.0.0.1:{ports['on']}"]
        written = counter(on, "deepinfra_ledger_records_written_total")
        dropped = counter(on, "deepinfra_ledger_records_dropped_total")
    add_us, write_us = entry_cost()
    on = [r for r in rows if r.server == "on"]
    per_request_us = statistics.median(
        r.api_cpu_ms_per_1k_tokens * args.max_tokens for r in on
    )  # ms per 1k tokens x tokens per request = us per request
    intro = (
        f"The usage ledger on against off; entries the `on` arm wrote: {written:.0f}, "
        f"dropped: {dropped:.0f}. One entry on its own: {add_us:.1f} us to hand over, "
        f"{write_us:.1f} us of a group's write, against {per_request_us:.0f} us of API CPU "
        f"per request: {(add_us + write_us) / per_request_us:.2%}."
    )
    write_report(args, "ledger", rows, ("off", "on"), intro)
    return 0


def entry_cost(n: int = 100_000, groups: int = 400, size: int = 25) -> tuple[float, float]:
    """(us to hand one entry over, us of CPU per entry written in groups of `size`)."""
    ledger = Ledger("bench", max_queued=n + 1)

    def entry(seq: int) -> LedgerEntry:
        return LedgerEntry(
            ledger.origin, seq, f"r{seq}", "", "m", None, "chat", "default", "http", None,
            time.time(), 40, 0, 64, 1_234_000,
        )  # fmt: skip

    started = time.process_time()
    for _ in range(n):
        ledger.add(entry(ledger.next_seq()))
    add_us = (time.process_time() - started) / n * 1e6
    store = Store.open("", Path(tempfile.mkdtemp(prefix="bench-ledger-")))
    try:
        started = time.process_time()
        for g in range(groups):
            usage.write(store, [entry(g * size + i) for i in range(size)])
        write_us = (time.process_time() - started) / (groups * size) * 1e6
    finally:
        store.close()
    return add_us, write_us


if __name__ == "__main__":
    sys.exit(main())
