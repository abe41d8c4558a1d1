"""A real fleet on the CPU: `deepinfra-serve fleet` runs HAProxy and three replicas (two of the
tiny Llama, one of the tiny Mistral) under supervisord, on loopback ports, sharing one store
(the session's PostgreSQL), its replicas' spans sent over OTLP/HTTP to the tests' stand-in for
a collector."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..collector import Collector, http_collector
from ..helpers import (
    FLEET_KEY,
    FLEET_KEY_LIMIT,
    FLEET_LIMITED_KEY,
    ROOT,
    START_TIMEOUT_S,
    RunningFleet,
    free_port,
    postgres_database,
)

SPEC = ROOT / "fleets" / "dev" / "tiny.yaml"


def _free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports (replicas get consecutive ports)."""
    for _ in range(100):
        first = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise RuntimeError("no consecutive free ports")


@pytest.fixture(scope="package")
def fleet_collector() -> Iterator[tuple[str, Collector]]:
    """(endpoint, spans received) of the OTLP receiver the fleet's replicas export to."""
    with http_collector() as received:
        yield received


@pytest.fixture(scope="package")
def fleet(
    cache_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str | None,
    adapter_dir: Path,
    fleet_collector: tuple[str, Collector],
) -> Iterator[RunningFleet]:
    if shutil.which("haproxy") is None:
        pytest.skip("Debian's haproxy is not installed here (`make test` installs it as root)")
    run_dir = tmp_path_factory.mktemp("fleet")
    log = run_dir / "fleet.out"
    port, first = free_port(), _free_ports(3)
    env = {
        **os.environ,
        "DEEPINFRA_SERVE_API_KEYS": (
            f"{FLEET_KEY}, {FLEET_LIMITED_KEY} rate_limit={FLEET_KEY_LIMIT}"
        ),
        "DEEPINFRA_SERVE_SHUTDOWN_GRACE_S": "60",
        "PYTHONUNBUFFERED": "1",
        # Every replica's store: the session's PostgreSQL, else one SQLite file they share.
        "DEEPINFRA_SERVE_STORE_URL": postgres_database(postgres_url, "fleet")
        if postgres_url
        else "",
        "DEEPINFRA_SERVE_DATA_DIR": str(run_dir / "data"),
        "DEEPINFRA_SERVE_ADAPTER_DIRS": str(adapter_dir),
        # Every replica traced, by the settings supervisord passes on to them.
        "OTEL_EXPORTER_OTLP_ENDPOINT": fleet_collector[0],
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "fleet",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    cmd = [
        sys.executable,
        "-m",
        "deepinfra_serve.cli",
        "fleet",
        "--spec",
        str(SPEC),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--first-replica-port",
        str(first),
        "--cache-dir",
        str(cache_dir),
        "--run-dir",
        str(run_dir),
    ]
    with log.open("wb") as out:
        # Its own process group (to stop it whole), in this session: a session of its own
        # would get its own share of the CPU from the kernel's autogroup scheduler.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, process_group=0)
    fleet = RunningFleet(
        url=f"http://127.0.0.1:{port}",
        run_dir=run_dir,
        replicas={
            "deepinfra-serve-tiny-random-llama-0": f"http://127.0.0.1:{first}",
            "deepinfra-serve-tiny-random-llama-1": f"http://127.0.0.1:{first + 1}",
            "deepinfra-serve-tiny-mistral-0": f"http://127.0.0.1:{first + 2}",
        },
        log=log,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the fleet did not get ready"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{fleet.url}/health/ready", timeout=2).status_code == 200 and all(
                    fleet.ready(name) for name in fleet.replicas
                ):
                    break
            time.sleep(0.5)
        yield fleet
    finally:
        # supervisord (the process started above, exec'd in place) stops HAProxy and the
        # replicas, draining them, then exits.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
