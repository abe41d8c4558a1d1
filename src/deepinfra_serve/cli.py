"""Command line: `deepinfra-serve serve|prepare|engine-args`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .cards import CardError, load_card
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "command"}
    settings = ServerSettings(**overrides)
    configure_logging(settings.log_level)
    try:
        card = load_card(settings.card)
    except CardError as exc:
        print(f"deepinfra-serve: {exc}", file=sys.stderr)
        return 2

    from .engine_args import build_engine_args, detect_device, plan_engine
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

    import uvicorn

    from .app import create_app
    from .served_model import ServedModel

    def start_model() -> ServedModel:
        model = prepare_weights(card, settings.cache_dir)
        plan = plan_engine(card, model, device, cpu_kv_cache_gib=settings.cpu_kv_cache_gib)
        return ServedModel.start(card, build_engine_args(plan))

    failed = False

    def on_fatal() -> None:
        nonlocal failed
        failed = True
        server.should_exit = True

    app = create_app(card, start_model, settings, on_fatal)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # the service writes its own JSON access lines
    )
    server = uvicorn.Server(config)
    log.info(
        "serving %s on http://%s:%d (device %s)", card.name, settings.host, settings.port, device
    )
    server.run()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
