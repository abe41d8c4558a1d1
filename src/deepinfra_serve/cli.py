"""Command line: `deepinfra-serve serve|prepare|engine-args|fleet|key-limits|usage`."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config.cards import CardError, ModelCard, load_card, load_cards
from .config.settings import ServerSettings
from .observability.logs import configure_logging
from .observability.tracing import TracingError, TracingSettings
from .observability.tracing import settings_from as tracing_settings

if TYPE_CHECKING:  # the engine's modules load vLLM: imported where a command needs them
    from .engine.engine_args import Device

log = logging.getLogger("deepinfra_serve")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepinfra-serve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--card", type=Path, help="model card YAML (DEEPINFRA_SERVE_CARD)")
        p.add_argument("--cache-dir", type=Path, help="weights cache (DEEPINFRA_SERVE_CACHE_DIR)")
        p.add_argument("--device", choices=["auto", "cuda", "cpu"], help="(DEEPINFRA_SERVE_DEVICE)")

    serve = sub.add_parser("serve", help="prepare the card's weights and serve it over HTTP")
    common(serve)
    serve.add_argument("--host", help="(DEEPINFRA_SERVE_HOST)")
    serve.add_argument("--port", type=int, help="(DEEPINFRA_SERVE_PORT)")
    common(sub.add_parser("prepare", help="only materialise the card's weights"))
    common(sub.add_parser("engine-args", help="print the engine arguments the card runs with"))
    fleet = sub.add_parser(
        "fleet", help="serve several cards and replicas behind one front door (HAProxy)"
    )
    fleet.add_argument("--spec", type=Path, required=True, help="the fleet file (fleets/*.yaml)")
    fleet.add_argument("--host", help="front door address (DEEPINFRA_SERVE_HOST)")
    fleet.add_argument("--port", type=int, help="front door port (DEEPINFRA_SERVE_PORT)")
    fleet.add_argument("--cache-dir", type=Path, help="weights cache (DEEPINFRA_SERVE_CACHE_DIR)")
    fleet.add_argument("--device", choices=["auto", "cuda", "cpu"], help="default: the file's")
    fleet.add_argument("--run-dir", type=Path, help="configuration and logs (default: in cache)")
    fleet.add_argument("--first-replica-port", type=int, help="default: the front door's + 1")
    fleet.add_argument("--max-body-bytes", type=int, default=None, help="default: 1 MiB")
    fleet.add_argument("--config-only", action="store_true", help="write the config and exit")
    keys = sub.add_parser(
        "key-limits",
        help="print a front door's key_limits.map: the sha256 digest and limit of each API key "
        "with its own rate_limit (from DEEPINFRA_SERVE_API_KEYS and the keys file)",
    )
    keys.add_argument("--api-keys-file", type=Path, help="(DEEPINFRA_SERVE_API_KEYS_FILE)")
    usage = sub.add_parser(
        "usage",
        help="print the usage ledger's daily rows (one per key, day, model and tier) from the "
        "store, to invoice from",
    )
    usage.add_argument("--from", dest="first", type=_day, help="first day, YYYY-MM-DD (UTC)")
    usage.add_argument("--to", dest="last", type=_day, help="last day, included; default: today")
    usage.add_argument("--format", choices=["csv", "json"], default="csv")
    usage.add_argument("--key", help="one API key's sha256 digest only")
    usage.add_argument("--store-url", help="(DEEPINFRA_SERVE_STORE_URL)")
    usage.add_argument("--data-dir", type=Path, help="(DEEPINFRA_SERVE_DATA_DIR)")
    return parser


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a day, YYYY-MM-DD") from None


def serve_command(card: Path, host: str, port: int, *extra: str) -> list[str]:
    """The command line that serves `card` with this interpreter, for whatever starts servers
    (the tests, the benchmarks)."""
    cmd = [sys.executable, "-m", "deepinfra_serve.cli", "serve", "--card", str(card)]
    return [*cmd, "--host", host, "--port", str(port), *extra]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setting_names = ServerSettings.model_fields.keys()
    overrides = {k: v for k, v in vars(args).items() if v is not None and k in setting_names}
    settings = ServerSettings(**overrides)
    # The usage report is the command's output: its log lines go to stderr.
    configure_logging(settings.log_level, sys.stderr if args.command == "usage" else sys.stdout)
    if args.command in ("key-limits", "serve", "fleet"):
        # A typo in the keys fails the start, naming the option (never the key).
        from .http.auth import read_entries

        try:
            entries = read_entries(settings.api_keys, settings.api_keys_file)
        except (OSError, ValueError) as exc:
            print(f"deepinfra-serve: API keys: {exc}", file=sys.stderr)
            return 2
        if args.command == "key-limits":
            from .fleet.config import key_limits_map

            print(key_limits_map(entries), end="")
            return 0
    if args.command == "usage":
        return _usage(args, settings)
    if args.command == "fleet":
        from .fleet.run import DEFAULT_MAX_BODY_BYTES, run_fleet

        return run_fleet(
            args.spec,
            settings,
            run_dir=args.run_dir,
            first_replica_port=args.first_replica_port,
            max_body_bytes=args.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
            config_only=args.config_only,
        )
    try:
        card = load_card(settings.card)
        traces = tracing_settings(os.environ)
    except (CardError, TracingError) as exc:
        print(f"deepinfra-serve: {exc}", file=sys.stderr)
        return 2

    from .engine.engine_args import api_process_count, detect_device, plan_engine
    from .engine.weights import prepare_weights

    device = detect_device() if settings.device == "auto" else settings.device
    if args.command == "engine-args":
        from .engine.weights import model_path

        plan = plan_engine(
            card,
            model_path(card, settings.cache_dir),
            device,
            cpu_kv_cache_gib=settings.cpu_kv_cache_gib,
            traces=traces,
        )
        print(
            json.dumps(
                {
                    "device": device,
                    "api_processes": api_process_count(card, device, settings.api_processes),
                    "engine_args": plan.kwargs,
                    "env": plan.env,
                    "changes": plan.changes,
                },
                indent=2,
            )
        )
        return 0

    if args.command == "prepare":
        print(prepare_weights(card, settings.cache_dir))
        return 0

    status = _serve(card, settings, device, traces)
    gc.collect()  # what the app left in reference cycles goes while every module is whole
    return status


def _usage(args: argparse.Namespace, settings: ServerSettings) -> int:
    from .store import usage
    from .store.database import Store
    from .usage.report import render

    last = args.last or datetime.now(UTC).date()
    first = args.first or last.replace(day=1)
    if first > last:
        print("deepinfra-serve usage: --from is after --to", file=sys.stderr)
        return 2
    store = Store.open(settings.store_url, settings.data_dir)
    try:
        rows = usage.daily(store, first, last, args.key)
    finally:
        store.close()
    sys.stdout.write(render(rows, args.format))
    return 0


def _serve(
    card: ModelCard, settings: ServerSettings, device: Device, traces: TracingSettings | None
) -> int:
    from .engine.engine_args import api_process_count, build_engine_args, plan_engine
    from .engine.served_model import ServedModel
    from .engine.weights import prepare_weights
    from .http.server import run_server

    def plan() -> Any:
        model = prepare_weights(card, settings.cache_dir)
        return build_engine_args(
            plan_engine(
                card,
                model,
                device,
                cpu_kv_cache_gib=settings.cpu_kv_cache_gib,
                traces=traces,
            )
        )

    try:
        load_cards(settings.fleet_cards)  # what /v1/openai/models lists: checked before serving
    except CardError as exc:
        print(f"deepinfra-serve: fleet card {exc}", file=sys.stderr)
        return 2
    processes = api_process_count(card, device, settings.api_processes)
    log.info(
        "serving %s on http://%s:%d (device %s, %d API process%s)",
        card.name,
        settings.host,
        settings.port,
        device,
        processes,
        "" if processes == 1 else "es",
    )
    if processes > 1:
        from .http.api_processes import serve_processes

        return serve_processes(card, settings, plan(), processes)
    # One process: the probes answer while the weights are prepared and the engine loads.
    return run_server(
        card, settings, lambda: ServedModel.start(card, ServedModel.own_engine(plan()))
    )


if __name__ == "__main__":
    sys.exit(main())
