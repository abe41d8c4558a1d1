"""A container engine for the image test: a Docker daemon of the test's own, and a Debian base.

No image registry is reachable from these machines, so `FROM python:3.11-slim` cannot be
pulled: the base is the Debian bookworm with python3 that `prepare.py` made, imported once.
The daemon keeps its images under the weights cache (layers survive between runs on a
developer's machine); its sockets and state are in a temporary folder, and it is stopped by
its process id.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from ..helpers import stop
from ..helpers import unavailable as _unavailable
from .prepare import BASE_TARBALL, CACHE

BASE_IMAGE = "deepinfra-serve-test-base:bookworm"


def unavailable(why: str) -> NoReturn:
    """No container engine can be started here."""
    _unavailable(f"no container engine: {why} (`make image-test` installs one)")


class Docker:
    def __init__(self, socket: Path) -> None:
        self.host = f"unix://{socket}"

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        result = subprocess.run(
            ["docker", "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            output = (result.stdout + result.stderr)[-4000:]
            raise AssertionError(f"docker {' '.join(args[:3])}: {output}")
        return result.stdout.strip()

    def ping(self) -> bool:
        info = ["docker", "-H", self.host, "info"]
        return subprocess.run(info, capture_output=True, timeout=10).returncode == 0

    def has_image(self, name: str) -> bool:
        return bool(self.run("images", "-q", name))


@contextlib.contextmanager
def daemon(work: Path) -> Iterator[Docker]:
    """dockerd on a unix socket of its own, without networks of its own (containers and
    builds use the host's network and reach loopback only)."""
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        unavailable("dockerd or docker is not installed")
    if os.geteuid() != 0:
        unavailable("dockerd needs root here")
    data = CACHE / "docker"
    data.mkdir(parents=True, exist_ok=True)
    socket = work / "docker.sock"
    log_path = work / "dockerd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                "dockerd",
                "--data-root", str(data),
                "--exec-root", str(work / "exec"),
                "--pidfile", str(work / "dockerd.pid"),
                "-H", f"unix://{socket}",
                "--iptables=false",
                "--bridge=none",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    docker = Docker(socket)
    try:
        deadline = time.monotonic() + 60
        while not (socket.exists() and docker.ping()):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                unavailable(f"dockerd did not start:\n{tail}")
            time.sleep(0.2)
        yield docker
    finally:
        stop(proc)
        # The daemon leaves its network namespace mounted under its exec root.
        for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            path = mount.split()[1]
            if path.startswith(str(work)):
                subprocess.run(["umount", "--lazy", path], check=False)


def base_image(docker: Docker) -> str:
    """The Debian base `prepare.py` made, imported once into the daemon."""
    if docker.has_image(BASE_IMAGE):
        return BASE_IMAGE
    if not BASE_TARBALL.exists():
        unavailable("no base image (`python -m tests.image.prepare` makes it)")
    docker.run("import", str(BASE_TARBALL), BASE_IMAGE)
    return BASE_IMAGE
