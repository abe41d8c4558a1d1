"""Command line: `deepinfra-serve serve|prepare|engine-args`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import uvicorn

from .cards import CardError, ModelCard, load_card
from .lifecycle import Lifecycle
from .observability.logs import configure_logging
from .settings import ServerSettings

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setting_names = ServerSettings.model_fields.keys()
    overrides = {k: v for k, v in vars(args).items() if v is not None and k in setting_names}
    settings = ServerSettings(**overrides)
    configure_logging(settings.log_level)
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
    except CardError as exc:
        print(f"deepinfra-serve: {exc}", file=sys.stderr)
        return 2

    from .engine_args import detect_device, plan_engine
    from .weights import prepare_weights

    device = detect_device() if settings.device == "auto" else settings.device
    if args.command == "engine-args":
        from .weights import model_path

        plan = plan_engine(
            card,
            model_path(card, settings.cache_dir),
            device,
            cpu_kv_cache_gib=settings.cpu_kv_cache_gib,
        )
        print(
            json.dumps(
                {
                    "device": device,
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

    status = _serve(card, settings, device)
    gc.collect()  # what the app left in reference cycles goes while every module is whole
    return status


def _serve(card: ModelCard, settings: ServerSettings, device: str) -> int:
    from .app import create_app
    from .engine_args import build_engine_args, plan_engine
    from .served_model import ServedModel
    from .weights import prepare_weights

    def start_model() -> ServedModel:
        model = prepare_weights(card, settings.cache_dir)
        plan = plan_engine(card, model, device, cpu_kv_cache_gib=settings.cpu_kv_cache_gib)
        return ServedModel.start(card, build_engine_args(plan))

    failed = False

    def on_fatal() -> None:
        nonlocal failed
        failed = True
        server.should_exit = True

    try:
        app = create_app(card, start_model, settings, on_fatal)
    except CardError as exc:
        print(f"deepinfra-serve: fleet card {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # the service writes its own JSON access lines
        timeout_graceful_shutdown=5,
    )
    server = DrainingServer(config, app.state.lifecycle, settings.shutdown_grace_s)
    log.info(
        "serving %s on http://%s:%d (device %s)", card.name, settings.host, settings.port, device
    )
    server.run()
    return 1 if failed else 0


class DrainingServer(uvicorn.Server):
    """On SIGTERM, drain before stopping: readiness turns 503 and new API requests are refused
    while the listening socket stays open; once in-flight requests have finished (or the grace
    period is over) the server stops and the process exits 0. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, grace_s: float) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle
        self.grace_s = grace_s
        self.draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.draining:
            super().handle_exit(sig, frame)
            return
        self.draining = True
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain()))

    async def _drain(self) -> None:
        lifecycle = self.lifecycle
        lifecycle.drain()
        log.info(
            "SIGTERM: draining %d in-flight requests and %d webhook jobs",
            lifecycle.in_flight,
            lifecycle.background,
        )
        deadline = time.monotonic() + self.grace_s
        while lifecycle.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if lifecycle.busy:
            log.warning(
                "grace period over with %d requests and %d webhook jobs in flight",
                lifecycle.in_flight,
                lifecycle.background,
            )
        # Not handle_exit: uvicorn would re-raise SIGTERM after stopping and the exit code
        # would say "killed" instead of 0.
        self.should_exit = True


if __name__ == "__main__":
    sys.exit(main())
