"""The servers under test: started, waited for, and stopped by their process id."""

from __future__ import annotations

import argparse
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
import yaml

from deepinfra_serve.cli import serve_command
from deepinfra_serve.config import strict_yaml

# Engine arguments that only the tests want: vLLM then logs every request it is given, and its
# own server each request's sampling parameters too. Measured here at 32 streams, that logging
# cost vLLM's server 11 % of its API CPU per token (92.4 against 82.2 ms per 1k) and this
# service under 2 %: left on, it flattered the ratios.
TEST_ONLY_ENGINE_ARGS = ("enable_log_requests",)


def bench_card(card: Path, out: Path) -> Path:
    """The card as the production cards run: without the engine arguments that only the tests
    want. Every arm (both servers and the limit) is given the same file."""
    raw = strict_yaml.load(card.read_text())
    extra = (raw.get("engine") or {}).get("extra_args") or {}
    if not any(name in extra for name in TEST_ONLY_ENGINE_ARGS):
        return card
    for name in TEST_ONLY_ENGINE_ARGS:
        extra.pop(name, None)
    path = out / f"bench-{card.name}"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return path


def bench_parser(doc: str, concurrency: str, rounds: int) -> argparse.ArgumentParser:
    """The arguments the benchmarks share: the card, the levels and rounds, the tokens per
    request, the requests per level (0: its own count), where weights and results go."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--card", type=Path, default=Path("model_cards/dev/tiny-random.yaml"))
    parser.add_argument("--concurrency", default=concurrency)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--requests", type=int, default=0, help="per level; 0: the benchmark's own count"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "deepinfra-serve"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    return parser


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
    return serve_command(card, "127.0.0.1", port, "--cache-dir", str(cache_dir), "--device", "cpu")


def bare_command(card: Path, port: int, cache_dir: Path) -> list[str]:
    """The HTTP floor (`benchmarks.bare_asgi`)."""
    cmd = [sys.executable, "-m", "benchmarks.bare_asgi", "--card", str(card)]
    return [*cmd, "--port", str(port), "--cache-dir", str(cache_dir)]


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
