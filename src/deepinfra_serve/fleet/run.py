"""`deepinfra-serve fleet`: write a fleet's configuration, prepare its weights, hand over to
supervisord (which runs HAProxy and the replicas)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from ..config.settings import ServerSettings
from .config import write_config
from .spec import FleetError, load_fleet

log = logging.getLogger("deepinfra_serve.fleet")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def run_fleet(
    spec_path: Path,
    settings: ServerSettings,
    *,
    run_dir: Path | None,
    first_replica_port: int | None,
    max_body_bytes: int,
    config_only: bool,
) -> int:
    from ..engine.weights import prepare_weights

    haproxy = shutil.which("haproxy")
    if haproxy is None and not config_only:
        print(
            "deepinfra-serve: the fleet's front door needs HAProxy (apt-get install haproxy)",
            file=sys.stderr,
        )
        return 2
    try:
        fleet = load_fleet(
            spec_path,
            device=settings.device,
            first_port=first_replica_port or settings.port + 1,
        )
    except FleetError as exc:
        print(f"deepinfra-serve: {exc}", file=sys.stderr)
        return 2
    run_dir = (run_dir or settings.cache_dir / "fleets" / str(settings.port)).resolve()
    conf = write_config(
        fleet,
        run_dir,
        spec_path=spec_path.resolve(),
        host=settings.host,
        port=settings.port,
        haproxy=haproxy or "haproxy",
        max_body_bytes=max_body_bytes,
        stop_wait_s=settings.shutdown_grace_s + 10,
        settings=settings,
    )
    log.info("fleet configuration in %s", run_dir)
    if config_only:
        print(conf)
        return 0
    # Before any replica starts, so that none waits on another's download or generation.
    for card, _ in fleet.cards:
        prepare_weights(card, settings.cache_dir)
    for r in fleet.replicas:
        log.info(
            "replica %s: %s on 127.0.0.1:%d %s",
            r.name,
            r.card.name,
            r.port,
            f"GPUs {','.join(map(str, r.gpus))}" if r.gpus else "",
        )
    log.info("front door on http://%s:%d", settings.host, settings.port)
    sys.stdout.flush()
    supervisord = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
    os.environ["DEEPINFRA_SERVE_CACHE_DIR"] = str(settings.cache_dir)
    os.execv(sys.executable, supervisord)
