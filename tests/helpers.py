"""What the tests share: starting and stopping real servers, reading their streams, metrics
and logs, posting the common requests, and a webhook receiver on the loopback.

Every server a test starts is stopped by its process id (its own processes too), and every
request goes to the loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psutil
import pytest
from pydantic import BaseModel

from deepinfra_serve.cli import serve_command

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "model_cards"
TINY_CARD = CARDS / "dev" / "tiny-random.yaml"
DEMO_CARD = CARDS / "dev" / "smollm2-135m-instruct.yaml"
MODEL = "deepinfra-serve/tiny-random-llama"  # the tiny card's
CHAT = "/v1/openai/chat/completions"
COMPLETIONS = "/v1/openai/completions"
INFERENCE = f"/v1/inference/{MODEL}"
HELLO = [{"role": "user", "content": "Hello!"}]
START_TIMEOUT_S = 300
CHART = ROOT / "helm" / "deepinfra-serve"
KUBE_VERSION = "1.37.0"  # the Kubernetes schemas the chart is validated against
# An abort takes one engine step here (tens of ms); the bound leaves a loaded 2-core machine
# room, and the measured figure is printed.
ABORT_BOUND_S = 3.0
# The session server's usage ledger holds this many entries while its store is down.
SESSION_LEDGER_QUEUE = 64
# The concurrency limit of the HTTP tests' guarded server, and a key it accepts.
GUARDED_LIMIT = 4
GUARDED_KEY_LIMIT = 2  # secret-from-file's own limit
GUARDED_ENGINE_SEQS = 3  # max_num_seqs: the 4th admitted request waits in the engine's queue
GUARDED_FLEX_WAIT_S = 1
GUARDED_AUTH = {"Authorization": "Bearer secret-inline-1"}
# Its edges, set short for the tests of stalled clients: the read timeout, the connections it
# holds and the bytes of request bodies still arriving.
GUARDED_READ_TIMEOUT_S = 3
GUARDED_MAX_CONNECTIONS = 340
GUARDED_PENDING_BYTES = 9 * 1024 * 1024  # the default body bound (8 MiB) must fit
# A long greedy stream (greedy: no early end at a drawn EOS).
LONG_STREAM = {"model": MODEL, "messages": HELLO, "temperature": 0, "stream": True}
# Streamed tokens per output on the engine tests' variant server (vLLM's `stream_interval`).
STREAM_INTERVAL = 8

Probes = list[tuple[int | None, int | None, int | None]]


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def card_variant(path: Path, *edits: tuple[str, str], card: Path = TINY_CARD) -> Path:
    """A copy of `card` at `path`, each (old, new) text replaced once."""
    text = card.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path.write_text(text)
    return path


@contextlib.contextmanager
def server_process(
    card: Path,
    cache_dir: Path,
    log_path: Path,
    env: dict[str, str] | None = None,
    probes: Probes | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Serve `card` on a free loopback port; yields the base URL, once /health answers 200, and
    the process, for tests that signal or kill it. It leads a process group of its own, as a
    server started from a shell does (a test may signal the group).

    `probes`, when given, receives (live, ready, health) status codes seen while starting (None:
    no answer yet)."""
    port = free_port()
    env = {
        **os.environ,
        "DEEPINFRA_SERVE_CACHE_DIR": str(cache_dir),
        # Its own store (SQLite), unless the test names one.
        "DEEPINFRA_SERVE_DATA_DIR": str(log_path.parent / f"data-{port}"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            serve_command(card, "127.0.0.1", port),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            process_group=0,
        )
    base = f"http://127.0.0.1:{port}"
    descendants: list[psutil.Process] = []
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


@contextlib.contextmanager
def running_server(
    card: Path, cache_dir: Path, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Like `server_process`, for tests that only need the base URL."""
    with server_process(card, cache_dir, log_path, env) as (url, _):
        yield url


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def descendants(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The server's own processes: API processes, engine core, workers."""
    return psutil.Process(proc.pid).children(recursive=True)


def exited(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped
    except psutil.NoSuchProcess:
        return True


def engine_core(proc: subprocess.Popen[bytes]) -> psutil.Process:
    """The server's vLLM engine core process."""
    return next(
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if p.name() == "VLLM::EngineCore"
    )


def killed_leaves_nothing(url: str, proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL of the server (as the kernel's OOM killer sends it) with a stream in flight:
    every process it started (API processes, engine core, workers) is gone within 10 s."""
    family = descendants(proc)
    [core] = [p for p in family if p.name() == "VLLM::EngineCore"]
    # In a group of its own, with its workers: a signal to the server's group misses them.
    assert os.getpgid(core.pid) == core.pid != os.getpgid(proc.pid)
    assert all(os.getpgid(p.pid) == core.pid for p in core.children(recursive=True))
    with (
        httpx.Client(base_url=url, timeout=30) as c,
        c.stream("POST", CHAT, json={**LONG_STREAM, "max_tokens": 500}) as s,
    ):
        assert s.status_code == 200
        next(s.iter_lines())
        proc.kill()  # its process only: not its group, which would reach them all
        proc.wait()
    t0 = time.monotonic()
    while not all(exited(p) for p in family):
        left = [(p.pid, p.name()) for p in family if not exited(p)]
        assert time.monotonic() - t0 < 10, f"still running 10 s after SIGKILL: {left}"
        time.sleep(0.1)
    print(f"{len(family)} processes gone {time.monotonic() - t0:.1f} s after SIGKILL")


def json_log(path: Path, pattern: str = "") -> list[dict[str, Any]]:
    """The server's JSON log lines (this service's own loggers) whose text matches `pattern`;
    a last line the server is still writing is left out."""
    text = path.read_text(errors="replace")
    lines = text.split("\n")[:-1]  # what follows the last newline is not a whole line yet
    return [json.loads(line) for line in lines if line.startswith("{") and re.search(pattern, line)]


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def _tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def unavailable(message: str) -> NoReturn:
    """Skip, saying why, on a developer's machine without a tool (Prometheus, a container
    engine); in CI, where `.ci/run` installs it, a missing tool is a broken set-up and fails."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def eventually(check: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Wait until `check()` is true (the last counts land as a response's last bytes go)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what or "the condition never held"
        time.sleep(0.05)


# --- requests --------------------------------------------------------------------------------


def chat(client: httpx.Client, **body: Any) -> dict[str, Any]:
    """A chat completion from the tiny model (`messages` defaults to a hello); must be 200."""
    r = client.post(CHAT, json={"model": MODEL, "messages": HELLO, **body})
    assert r.status_code == 200, r.text
    return r.json()


def complete(client: httpx.Client, **body: Any) -> dict[str, Any]:
    """A text completion from the tiny model (`prompt` defaults to "Hello"); must be 200."""
    r = client.post(COMPLETIONS, json={"model": MODEL, "prompt": "Hello", **body})
    assert r.status_code == 200, r.text
    return r.json()


# --- server-sent events ----------------------------------------------------------------------
# Split as the spec splits them: at LF only. httpx's `iter_lines` also splits at U+2028, U+0085
# and the like, which generated text (and so a JSON string in an event) can hold.


def sse_lines(r: httpx.Response) -> Iterator[str]:
    """The body's lines, as they arrive."""
    rest = b""
    for chunk in r.iter_bytes():
        *lines, rest = (rest + chunk).split(b"\n")
        yield from (line.rstrip(b"\r").decode() for line in lines)
    if rest:
        yield rest.decode()


async def asse_lines(r: httpx.Response) -> AsyncIterator[str]:
    rest = b""
    async for chunk in r.aiter_bytes():
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode()
    if rest:
        yield rest.decode()


def sse_data(r: httpx.Response) -> list[str]:
    """Every event's data, in order (`[DONE]` included); each non-empty line must be one."""
    lines = [line for line in sse_lines(r) if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[6:] for line in lines]


def checked_data(r: httpx.Response, schema: type[BaseModel]) -> list[str]:
    """A 200 stream's event data, `[DONE]` included; every other event is proved against
    `schema`, the documented model of one event, which refuses keys it does not declare."""
    assert r.status_code == 200, r.read()
    assert r.headers["content-type"].startswith("text/event-stream")
    data = sse_data(r)
    for d in data:
        if d != "[DONE]":
            schema.model_validate_json(d)
    return data


def sse_events(r: httpx.Response, schema: type[BaseModel]) -> list[dict[str, Any]]:
    """A 200 stream's JSON events (`[DONE]` left out), each proved against `schema`."""
    return events(checked_data(r, schema))


def stream(client: httpx.Client, path: str, schema: type[BaseModel], **body: Any) -> list[str]:
    """A streamed answer's event data, `[DONE]` included, each event proved (`checked_data`)."""
    with client.stream("POST", path, json={**body, "stream": True}) as r:
        return checked_data(r, schema)


def events(data: list[str]) -> list[dict[str, Any]]:
    """The JSON events of a stream's data (`[DONE]` left out)."""
    return [json.loads(d) for d in data if d != "[DONE]"]


# --- prompts ---------------------------------------------------------------------------------

_WORDS = ("river", "stone", "cloud", "lantern", "copper", "meadow", "harbor", "ember")


def long_text(words: int = 100) -> str:
    """A prompt start no other request has sent: about 4 tokens a word on the tiny card, so
    100 words fill three of the engine's cache blocks on the CPU (128 tokens each)."""
    rng = random.Random(uuid.uuid4().int)
    return " ".join(rng.choice(_WORDS) for _ in range(words))


# --- metrics ---------------------------------------------------------------------------------


def metric_sum(text: str, *names: str, **labels: str) -> float:
    """The sum of the samples of the named metrics whose labels include `labels`."""
    heads = tuple(name + "{" for name in names) + tuple(name + " " for name in names)
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(heads) and all(label in line for label in wanted)
    )


def engine_load(metrics: str) -> float:
    """Requests the engine holds, running or waiting, by vLLM's own gauges."""
    return metric_sum(metrics, "vllm:num_requests_running", "vllm:num_requests_waiting")


def engine_finished(metrics: str) -> float:
    """Requests the engine has finished, whatever the reason, by vLLM's own counter."""
    return metric_sum(metrics, "vllm:request_success_total")


def running(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    assert "vllm:num_requests_running{" in text, "vllm:num_requests_running not exported"
    return metric_sum(text, "vllm:num_requests_running")


def settles_to_zero(client: httpx.Client, within_s: float = 30) -> float:
    """Seconds until the engine runs nothing; fails after `within_s` (it kept generating)."""
    started = time.monotonic()
    while running(client) != 0:
        assert time.monotonic() - started < within_s, "the engine kept generating"
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    print(f"engine idle {elapsed:.3f} s after the disconnect")
    return elapsed


def in_flight(metrics: str) -> float:
    """Requests the server is serving, by its own gauge."""
    return metric_sum(metrics, "deepinfra_requests_in_flight")


async def until_in_flight(ac: httpx.AsyncClient, n: int, within_s: float = 30) -> None:
    """Wait until the server serves `n` requests at once."""
    deadline = time.monotonic() + within_s
    while in_flight((await ac.get("/metrics")).text) < n:
        assert time.monotonic() < deadline, f"{n} requests never ran together"
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def polling(url: str, paths: tuple[str, ...]) -> Iterator[dict[str, set[int]]]:
    """Status codes each path answers, polled every 50 ms in a thread while the block runs."""
    seen: dict[str, set[int]] = {path: set() for path in paths}
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=2) as p:
            while not done.is_set():
                for path, statuses in seen.items():
                    with contextlib.suppress(httpx.HTTPError):
                        statuses.add(p.get(path).status_code)
                time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        yield seen
    finally:
        done.set()
        poller.join()


# --- webhooks --------------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.2 (the loopback address the test servers allow).

    Records every POST; answers 500 to the first `fail_first`, or never when `hang`."""

    def __init__(self, fail_first: int = 0, hang: bool = False, host: str = "127.0.0.2") -> None:
        self.fail_first = fail_first
        self.hang = hang
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                payload = json.loads(self.rfile.read(length))
                receiver.attempts += 1
                if receiver.hang:
                    receiver.release.wait(10)
                    return
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.bodies.append(payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.url = f"http://{host}:{self.port}/hook"

    def wait_for(self, condition: Callable[[], object], timeout: float = 20) -> None:
        eventually(condition, timeout, "timed out waiting for the webhook")


@contextlib.contextmanager
def receiving(**options: Any) -> Iterator[Receiver]:
    """A `Receiver`, serving until the block ends."""
    receiver = Receiver(**options)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        receiver.server.shutdown()
        receiver.server.server_close()


# --- function calling ------------------------------------------------------------------------

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {
                "zone": {"type": "string", "maxLength": 4},
                "hour": {"type": "integer", "minimum": 0, "maximum": 23},
            },
            "required": ["zone", "hour"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def assemble(chunks: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]], str]:
    """(content, tool calls, finish_reason) of choice 0, put together as clients do."""
    content, calls, reason = "", {}, ""
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for tc in delta.get("tool_calls", []):
                call = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] += tc.get("id") or ""
                call["name"] += tc.get("function", {}).get("name") or ""
                call["arguments"] += tc.get("function", {}).get("arguments") or ""
            reason = choice["finish_reason"] or reason
    return content, [calls[i] for i in sorted(calls)], reason


# --- fleets ----------------------------------------------------------------------------------

FLEET_KEY = "fleet-test-key"  # the test fleet's API key
FLEET_LIMITED_KEY = "fleet-limited-key"  # another, with its own limit
FLEET_KEY_LIMIT = 2
MISTRAL = "deepinfra-serve/tiny-mistral"


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


# --- the Helm chart --------------------------------------------------------------------------


def render(values: dict[str, Any], name: str = "llm") -> list[dict[str, Any]]:
    """The chart's objects for `values`, rendered by Helm's own library."""
    import helm_python
    import yaml

    chart = helm_python.Chart.load(CHART)
    try:
        out = chart.render(values, name=name, namespace="inference")
    finally:
        chart.close()
    docs = []
    for path, text in out.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def tiny_chat_prompt(cache_dir: Path, card: Any, messages: list[dict[str, Any]]) -> list[int]:
    """The tiny card's chat prompt for `messages`, as the server renders it, in token ids (its
    tokenizer is the one the session's weights were generated with)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cache_dir / "deepinfra-serve--tiny-random-llama")
    text = tokenizer.apply_chat_template(
        messages, chat_template=card.chat_template, add_generation_prompt=True, tokenize=False
    )
    assert text.endswith("<|im_start|>assistant\n")
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def postgres_database(url: str, name: str) -> str:
    """A fresh, empty database `name` in the cluster at `url` (dropped first if it is there), so
    that servers of different fixtures never share a store (nor run each other's batches)."""
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return plain.rsplit("/", 1)[0] + "/" + name


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL server programs, if the package is installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


# The clusters `postgres_cluster` runs, by port: (pg_ctl, its options, its data folder).
_CLUSTERS: dict[int, tuple[list[str], str, Path]] = {}


@contextlib.contextmanager
def postgres_stopped(url: str) -> Iterator[None]:
    """The cluster serving `url` (one `postgres_cluster` runs) stopped for the block, its
    connections cut, then started again on its port."""
    from sqlalchemy.engine import make_url

    pg_ctl, options, data = _CLUSTERS[int(make_url(url).port or 0)]
    quiet = subprocess.DEVNULL
    subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=True, stdout=quiet, stderr=quiet)
    try:
        yield
    finally:
        subprocess.run(
            [*pg_ctl, "-o", options, "-l", str(data / "server.log"), "-w", "start"],
            check=True,
            stdout=quiet,
            stderr=quiet,
        )


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on loopback (Debian's package), owned by the caller and
    stopped by it; yields its SQLAlchemy URL. As root, it runs as the `postgres` user."""
    import shutil
    import tempfile

    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("Debian's postgresql is not installed here (`make test` installs it)")
    data = Path(tempfile.mkdtemp(prefix="deepinfra-serve-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    quiet = subprocess.DEVNULL
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        stdout=quiet,
        stderr=quiet,
    )
    options = f"-k {data} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(data / "server.log"), "-w", "start"],
        check=True,
        stdout=quiet,
        stderr=quiet,
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    _CLUSTERS[port] = (pg_ctl, options, data)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _CLUSTERS.pop(port, None)
        with contextlib.suppress(FileNotFoundError):  # started again since: its new pid
            pid = int((data / "postmaster.pid").read_text().split()[0])
        subprocess.run(
            [*pg_ctl, "-m", "fast", "-w", "stop"], check=False, stdout=quiet, stderr=quiet
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # if the stop failed: by its process id
        shutil.rmtree(data, ignore_errors=True)


BATCH_ENDED = ("completed", "failed", "expired", "cancelled")


def batch_line(custom_id: str, endpoint: str, **body: Any) -> str:
    """One line of a batch's input file."""
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body})


def upload_batch(client: Any, lines: list[str], endpoint: str, **extra: Any) -> Any:
    """Upload `lines` and create their batch with the official `openai` client."""
    import io

    data = ("\n".join(lines) + "\n").encode()
    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch")
    return client.batches.create(
        input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h", **extra
    )


def wait_batch(client: Any, batch_id: str, timeout_s: float = 180, until: Any = None) -> Any:
    """Retrieve the batch until it has ended (or `until(batch)` holds)."""
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if until(batch) if until is not None else batch.status in BATCH_ENDED:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}: {batch}"
        time.sleep(0.25)


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_adapters(folder: Path, cache_dir: Path) -> Path:
    """LoRA adapters of the tiny card in `folder`: `green` and `blue` (good, rank 8),
    `rank-32` (over the card's max_lora_rank 16), `mistral` (a LoRA of another model's
    shapes), `prefix` (a PEFT adapter that is not a LoRA) and `linked` (green's files, linked
    to)."""

    from deepinfra_serve.config.adapters import GeneratedAdapterWeights
    from deepinfra_serve.config.cards import load_card
    from deepinfra_serve.engine.generated_adapters import generate_adapter
    from deepinfra_serve.engine.weights import prepare_weights

    base = Path(prepare_weights(load_card(TINY_CARD), cache_dir))
    for name, seed, rank in (("green", 2, 8), ("blue", 3, 8), ("rank-32", 4, 32)):
        generate_adapter(
            GeneratedAdapterWeights(source="generated", seed=seed, rank=rank), base, folder / name
        )
    other = folder / ".mistral-base"
    other.mkdir()
    config = json.loads((base / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    generate_adapter(GeneratedAdapterWeights(source="generated", seed=5), other, folder / "mistral")
    prefix = folder / "prefix"
    generate_adapter(GeneratedAdapterWeights(source="generated", seed=6), base, prefix)
    (prefix / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING", "r": 8}))
    (folder / "linked").mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / "linked" / name).symlink_to(folder / "green" / name)
    return folder
