"""A real fleet on the CPU: `deepinfra-serve fleet` runs HAProxy and three replicas (two of the
tiny Llama, one of the tiny Mistral) under supervisord, on loopback ports."""

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
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ..metrics import metric_sum
from ..server import ROOT, free_port

SPEC = ROOT / "fleets" / "dev" / "tiny.yaml"
KEY = "fleet-test-key"
LLAMA = "deepinfra-serve/tiny-random-llama"
MISTRAL = "deepinfra-serve/tiny-mistral"
START_TIMEOUT_S = 300


@dataclass
class RunningFleet:
    url: str
    run_dir: Path
    replicas: dict[str, str]  # process name -> base URL
    log: Path

    def pid(self, name: str) -> int:
        """The program's pid; 0 while it is not running (between an exit and its restart,
        where supervisorctl answers with status 7)."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "supervisor.supervisorctl",
                "-c",
                str(self.run_dir / "supervisord.conf"),
                "pid",
                name,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode not in (0, 7):
            raise RuntimeError(f"supervisorctl pid {name}: {done.returncode} {done.stderr}")
        out = done.stdout.strip()
        return int(out) if out.isdigit() else 0

    def metric(self, name: str, sample: str, **labels: str) -> float:
        """Sum of a replica's samples of one metric whose labels include `labels`."""
        return metric_sum(
            httpx.get(f"{self.replicas[name]}/metrics", timeout=10).text, sample, **labels
        )

    def ready(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.replicas[name]}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, name: str, within_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + within_s
        while not self.ready(name):
            assert time.monotonic() < deadline, f"{name} not ready in {within_s} s"
            time.sleep(0.5)


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
def fleet(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    if shutil.which("haproxy") is None:
        pytest.skip("Debian's haproxy is not installed here (`make test` installs it as root)")
    run_dir = tmp_path_factory.mktemp("fleet")
    log = run_dir / "fleet.out"
    port, first = free_port(), _free_ports(3)
    env = {
        **os.environ,
        "DEEPINFRA_SERVE_API_KEYS": KEY,
        "DEEPINFRA_SERVE_SHUTDOWN_GRACE_S": "60",
        "PYTHONUNBUFFERED": "1",
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
