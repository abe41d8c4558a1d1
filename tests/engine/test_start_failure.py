"""An engine that cannot start: the process logs why and exits 1 (before any probe could be
asked: the plan fails in the first second)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from deepinfra_serve.cli import serve_command

from ..helpers import TINY_CARD, free_port


def test_engine_start_failure_is_logged_and_exits_1(tmp_path: Path, cache_dir: Path) -> None:
    card = tmp_path / "too-wide.yaml"
    # Eight tensor-parallel ranks cannot be placed on this machine's cores.
    card.write_text(
        TINY_CARD.read_text().replace("tensor_parallel_size: 1", "tensor_parallel_size: 8")
    )
    port = free_port()
    proc = subprocess.Popen(
        serve_command(card, "127.0.0.1", port, "--cache-dir", str(cache_dir), "--device", "cpu"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        returncode = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read() if proc.stdout else ""
    assert returncode == 1, output
    assert "failed to start" in output
    assert "tensor_parallel_size 8 needs at least 8 CPU cores" in output
