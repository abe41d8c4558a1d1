"""The container image users build, built here (CPU variant) and run for real.

The Dockerfile is built with VARIANT=cpu over the Debian base `prepare.py` made, every wheel
served to the build from the wheelhouse `prepare.py` fetched, on loopback. The
container runs on the host's network, is spoken to on 127.0.0.1 only, and gets the tiny test
card mounted where the Helm chart mounts a card.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest

from ..helpers import CHAT, HELLO, MODEL, TINY_CARD, asse_lines, free_port, metric_sum
from .engine import Docker, base_image, daemon, unavailable
from .prepare import wheelhouse

# Fetching the wheels, making the base and building take minutes on a fresh machine.
pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "deepinfra-serve:test-cpu"
CARD_PATH = "/etc/deepinfra-serve/card.yaml"  # where the chart mounts the release's card
CONTEXT = 4096  # max_position_embeddings of the test weights
START_TIMEOUT_S = 300


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per wheel fetched says nothing


@contextlib.contextmanager
def wheel_server(folder: Path) -> Iterator[str]:
    """The folder as a find-links page on loopback, for pip inside the build."""
    handler = partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Built:
    docker: Docker
    seconds: float
    size_bytes: int


@dataclass
class Running:
    docker: Docker
    id: str
    url: str


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    work = tmp_path_factory.mktemp("docker")
    with daemon(work) as docker:
        args = ["build", "--network", "host", "-t", IMAGE]
        args += ["--build-arg", f"BASE={base_image(docker)}", "--build-arg", "VARIANT=cpu"]
        if not (wheelhouse() / "complete").exists():
            unavailable("no wheelhouse (`python -m tests.image.prepare` fetches it)")
        with wheel_server(wheelhouse()) as links:
            args += ["--build-arg", f"PIP_FIND_LINKS={links}", "--build-arg", "PIP_NO_INDEX=1"]
            started = time.monotonic()
            docker.run(*args, str(ROOT), timeout=1800)
            seconds = time.monotonic() - started
        size = int(docker.run("image", "inspect", "-f", "{{.Size}}", IMAGE))
        print(f"\nimage {IMAGE}: built in {seconds:.0f} s, {size / 1e9:.2f} GB")
        docker.run("image", "prune", "--force")  # earlier builds' layers, now untagged
        yield Built(docker, seconds, size)


@pytest.fixture(scope="module")
def container(image: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    docker, port = image.docker, free_port()
    # The test card with the context its weights allow (4,096), so that a stream can outlast
    # the time `docker stop` takes to signal on a loaded machine.
    card = tmp_path_factory.mktemp("card") / "card.yaml"
    text = TINY_CARD.read_text()
    assert "max_model_len: 1024" in text
    card.write_text(text.replace("max_model_len: 1024", f"max_model_len: {CONTEXT}"))
    cid = docker.run(
        "run", "--detach", "--network", "host", "--shm-size", "1g",
        "--env", "DEEPINFRA_SERVE_HOST=127.0.0.1",
        "--env", f"DEEPINFRA_SERVE_PORT={port}",
        # The drain test's streams take 13 s here and may take several times that on a loaded
        # machine: a grace period they cannot outlast, as a release sets one to its longest stream.
        "--env", "DEEPINFRA_SERVE_SHUTDOWN_GRACE_S=150",
        "--volume", f"{card}:{CARD_PATH}:ro",
        IMAGE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while _status(f"{url}/health") != 200:
            state = docker.run("inspect", "-f", "{{.State.Status}}", cid)
            if state != "running" or time.monotonic() > deadline:
                logs = docker.run("logs", "--tail", "60", cid, check=False)
                raise AssertionError(f"container {state}, not serving:\n{logs}")
            time.sleep(0.5)
        yield Running(docker, cid, url)
    finally:
        docker.run("rm", "--force", cid, check=False)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def test_the_image_is_built_and_its_size_reported(image: Built) -> None:
    # What `docker build` left: the CPU build of vLLM and torch make most of it.
    assert 0.5e9 < image.size_bytes < 8e9
    layers = image.docker.run("history", "--format", "{{.Size}}\t{{.CreatedBy}}", IMAGE)
    print(f"\n{layers}")


def test_it_runs_as_a_non_root_user(container: Running) -> None:
    docker = container.docker
    assert docker.run("inspect", "-f", "{{.Config.User}}", IMAGE) == "1000:1000"
    assert docker.run("exec", container.id, "id", "-u") == "1000"
    # The server process itself (PID 1 of the container), as the host sees it.
    pid = docker.run("inspect", "-f", "{{.State.Pid}}", container.id)
    assert Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[0] == "1000"


def test_the_probes_answer(container: Running) -> None:
    for probe in ("/health/live", "/health/ready", "/health"):
        assert _status(container.url + probe) == 200, probe
    metrics = httpx.get(container.url + "/metrics").text
    assert f'deepinfra_engine_ready{{model="{MODEL}"}} 1.0' in metrics


def test_a_chat_and_a_native_request_succeed(container: Running) -> None:
    with httpx.Client(base_url=container.url, timeout=60) as c:
        body = {"model": MODEL, "messages": HELLO, "max_tokens": 8, "temperature": 0}
        chat = c.post(CHAT, json=body)
        native = c.post(
            f"/v1/inference/{MODEL}", json={"input": "Hello", "max_new_tokens": 8, "temperature": 0}
        )
    assert chat.status_code == 200, chat.text
    assert chat.json()["usage"]["completion_tokens"] == 8
    assert chat.json()["choices"][0]["finish_reason"] == "length"
    assert native.status_code == 200, native.text
    assert native.json()["num_tokens"] == 8
    assert native.json()["results"][0]["generated_text"]


def test_sigterm_drains_streams_in_flight_and_exits_0(container: Running) -> None:
    # The signal `docker stop` sends, sent to the container's process straight from the host:
    # on a loaded machine `docker stop` itself took up to 15 s to deliver it, by which time the
    # streams could be over and nothing was left to drain.
    docker, n = container.docker, 8
    pid = int(docker.run("inspect", "-f", "{{.State.Pid}}", container.id))
    # Long enough to still be running when the signal lands. The weights are random, so where a
    # greedy answer meets EOS depends on the machine's float kernels; a regex that no answer can
    # complete within max_tokens (a token of this vocabulary is at most 6 letters) leaves EOS
    # out, and every stream runs to its length on any machine.
    body = {
        "model": MODEL,
        "messages": HELLO,
        "max_tokens": CONTEXT - 100,
        "temperature": 0,
        "response_format": {"type": "regex", "regex": "[a-z]{40000}"},
        "stream": True,
    }

    async def stream(ac: httpx.AsyncClient) -> list[str]:
        async with ac.stream("POST", CHAT, json=body) as r:
            assert r.status_code == 200, (await r.aread()).decode()
            return [line async for line in asse_lines(r) if line]

    async def scenario() -> tuple[list[list[str]], float]:
        async with httpx.AsyncClient(base_url=container.url, timeout=180) as ac:
            streams = [asyncio.create_task(stream(ac)) for _ in range(n)]
            deadline = time.monotonic() + 60
            while (seen := _in_flight((await ac.get("/metrics")).text)) < n:
                if ended := [t for t in streams if t.done()]:
                    lines = ended[0].result()  # raises its failure, if it failed
                    raise AssertionError(f"a stream ended before all {n} ran: {lines[-2:]}")
                if time.monotonic() > deadline:
                    logs = docker.run("logs", "--tail", "40", container.id, check=False)
                    raise AssertionError(f"{seen:.0f} of {n} streams in flight after 60 s:\n{logs}")
                await asyncio.sleep(0.05)
            started = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            stop = asyncio.create_task(
                asyncio.to_thread(docker.run, "wait", container.id, timeout=180)
            )
            results = await asyncio.gather(*streams)
            await stop
        return results, time.monotonic() - started

    results, seconds = asyncio.run(scenario())
    assert all(lines[-1] == "data: [DONE]" for lines in results)
    # Every stream ran to its end: a last chunk that finishes the choice, then [DONE].
    assert all(_finish(lines[-2]) == "length" for lines in results)
    assert docker.run("inspect", "-f", "{{.State.ExitCode}}", container.id) == "0"
    logs = docker.run("logs", container.id)
    drain = [line for line in logs.splitlines() if "SIGTERM" in line or "Shutting down" in line]
    print(f"\nSIGTERM to exit took {seconds:.1f} s; the container said:\n" + "\n".join(drain))
    assert any(f"SIGTERM: draining {n} in-flight requests" in line for line in drain)


def _finish(line: str) -> str | None:
    return json.loads(line.removeprefix("data: "))["choices"][0]["finish_reason"]


def _in_flight(metrics: str) -> float:
    return metric_sum(metrics, "deepinfra_requests_in_flight")
