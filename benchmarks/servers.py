"""The servers under test: started, waited for, and stopped by their process id."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil


def vllm_flags(kwargs: dict[str, Any]) -> list[str]:
    """The same engine arguments as vLLM server flags."""
    flags: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


@contextmanager
def server(
    name: str, cmd: list[str], env: dict[str, str], url: str, log: Path
) -> Iterator[psutil.Process]:
    """The server, started and healthy; yields its API process (the engine is a child)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start in 600 s; see {log}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def ours_command(card: Path, port: int, cache_dir: Path) -> list[str]:
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
        "--cache-dir",
        str(cache_dir),
        "--device",
        "cpu",
    ]


def vllm_command(
    engine_kwargs: dict[str, Any], port: int, chat_template: str | None, out: Path
) -> list[str]:
    """vLLM's server with the very engine arguments the card's plan gives this service, and
    the card's chat template, as this service renders it."""
    kwargs = dict(engine_kwargs)
    model = kwargs.pop("model")
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *vllm_flags(kwargs),
    ]
    if chat_template is not None:
        template = out / "chat_template.jinja"
        template.write_text(chat_template)
        cmd += ["--chat-template", str(template)]
    return cmd
