"""The usage ledger's cost: this service with the ledger on (every billed request queued and
written to its SQLite store) against off (`DEEPINFRA_SERVE_USAGE_LEDGER=false`), the same
card, engine arguments and workload, in interleaved rounds (`ab.interleaved`). Paired ratios
(on / off) of API-process CPU per 1,000 tokens, throughput and TTFT p50; target: within 3 %.

    python -m benchmarks.ledger --concurrency 32,128 --rounds 5
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.engine_args import plan_engine
from deepinfra_serve.engine.weights import prepare_weights

from .ab import interleaved, start_arms, write_report
from .measure import counter
from .servers import bench_card, bench_parser


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__ or "", "32,128", rounds=5)
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    card_file = bench_card(args.card, args.out)
    card = load_card(card_file)
    plan = plan_engine(card, prepare_weights(card, args.cache_dir), "cpu")
    env = {**os.environ, **plan.env}
    arms = {
        "off": (18341, {**env, "DEEPINFRA_SERVE_USAGE_LEDGER": "false"}),
        "on": (18342, env),
    }
    for _, arm_env in arms.values():  # a store of its own, empty at start
        arm_env["DEEPINFRA_SERVE_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-ledger-")
    with contextlib.ExitStack() as stack:
        front = start_arms(stack, arms, card_file, args, "ledger")
        ports = {name: port for name, (port, _) in arms.items()}
        rows = interleaved(ports, front, card.name, levels, args, "ledger")
        on = [f"http://127.0.0.1:{ports['on']}"]
        written = counter(on, "deepinfra_ledger_records_written_total")
        dropped = counter(on, "deepinfra_ledger_records_dropped_total")
    intro = (
        f"The usage ledger on against off; entries the `on` arm wrote: {written:.0f}, "
        f"dropped: {dropped:.0f}."
    )
    write_report(args, "ledger", rows, ("off", "on"), intro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
