"""Start the real `deepinfra-serve serve` process on the CPU engine for a test module or session."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"
TINY_CARD = CARDS / "dev" / "tiny-random.yaml"
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def json_log(path: Path, pattern: str) -> list[dict[str, Any]]:
    """The server's JSON log lines (this service's own loggers) whose text matches `pattern`."""
    return [
        json.loads(line)
        for line in path.read_text(errors="replace").splitlines()
        if line.startswith("{") and re.search(pattern, line)
    ]


def serve_command(card: Path, port: int, *extra: str) -> list[str]:
    """`deepinfra-serve serve` for `card` on a loopback port."""
    return [
        sys.executable,
        "-m",
        "deepinfra_serve.cli",
        "serve",
        "--card",
        str(card),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


@contextlib.contextmanager
def running_server(
    card: Path,
    cache_dir: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    probes: list[tuple[int | None, int | None, int | None]] | None = None,
) -> Iterator[str]:
    """Serve `card` on a free loopback port; yields the base URL once /health answers 200.

    `probes`, when given, receives (live, ready, health) status codes seen while starting (None: no
    answer yet)."""
    with server_process(card, cache_dir, log_path, env, probes) as (url, _):
        yield url


@contextlib.contextmanager
def server_process(
    card: Path,
    cache_dir: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    probes: list[tuple[int | None, int | None, int | None]] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Like `running_server`, and also yields the process, for tests that signal or kill it."""
    port = free_port()
    descendants: list[psutil.Process] = []
    env = {
        **os.environ,
        "DEEPINFRA_SERVE_CACHE_DIR": str(cache_dir),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    cmd = serve_command(card, port)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready in {START_TIMEOUT_S} s:\n{_tail(log_path)}")
            # /health last: once it says 200 the loop ends, so no earlier probe of the same
            # round can have seen the engine ready.
            live = _status(f"{base}/health/live") if probes is not None else None
            ready = _status(f"{base}/health/ready") if probes is not None else None
            health = _status(f"{base}/health")
            if probes is not None:
                probes.append((live, ready, health))
            if health == 200:
                break
            time.sleep(0.5)
        yield base, proc
    finally:
        # Its own processes (API processes, engine core, workers) are known before the stop,
        # so that whatever a failed stop leaves behind is killed by process id.
        with contextlib.suppress(psutil.NoSuchProcess):
            descendants = psutil.Process(proc.pid).children(recursive=True)
        stop(proc)
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
