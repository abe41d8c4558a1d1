"""Several API processes over one engine core, as vLLM's own server runs `--api-server-count`.

One Python process streams tokens on one CPU core, and a GPU engine at a large batch produces
more than one core can format (benchmarks/RESULTS.md). So the parent binds the port, starts
the engine core with vLLM's launcher and N API processes with vLLM's process manager; each is
an ordinary API process (`server.run_server`) whose `AsyncLLM` is one client of the shared
core, and all accept on the one listening socket, each connection taken by the process with
the fewest open (as vLLM's accept loop does). What they must agree on is shared:

- the limits: the admission counts (the model's, each key's) in shared memory
  (`lifecycle.SharedState`, `capacity`);
- /metrics: prometheus_client's multiprocess mode, every process writing to one directory;
- API keys and settings: each process reads the same ones;
- request ids: random, so unique whichever process draws them; a disconnect aborts the
  request in the process that holds it, as with one process.

The parent only supervises: SIGTERM and SIGINT are passed on (each process drains what it
holds), the death of the engine core is told to every process (their clients cannot see it;
each fails its in-flight requests and exits 1), and any process failing stops the rest. The
engine core and each API process run in process groups of their own, so that a signal to the
parent's group reaches them only through the parent, and die with the parent, SIGKILL
included (`engine.core_process`).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from ..config.cards import ModelCard
from ..config.settings import ServerSettings
from ..engine.core_process import die_with_parent, tied_engine_cores
from ..engine.lifecycle import SharedState
from .auth import read_entries
from .capacity import COUNTS_BEFORE_KEYS
from .server import listening_socket

log = logging.getLogger(__name__)

_EXIT_AFTER_CORE_DEATH_S = 10.0  # each process fails its requests and exits well within this


@dataclass(frozen=True)
class FrontEnd:
    """What each API process is started with (pickled into it)."""

    card: ModelCard
    settings: ServerSettings
    vllm_config: Any
    shared: SharedState
    log_requests: bool  # the engine arguments' enable_log_requests, which the config lacks


def serve_processes(card: ModelCard, settings: ServerSettings, engine_args: Any, count: int) -> int:
    """Run the engine core and `count` API processes until they stop; the exit status."""
    from ..engine.vllm_seam import (
        APIServerProcessManager,
        Executor,
        UsageContext,
        bind_engine_zmq_listeners,
        launch_core_engines,
        split_api_processes,
    )

    metrics_dir = tempfile.TemporaryDirectory(prefix="deepinfra-serve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir.name  # inherited by every process
    split_api_processes(engine_args, count)
    vllm_config = engine_args.create_engine_config(UsageContext.OPENAI_API_SERVER)
    sock = listening_socket(settings.host, settings.port)
    if sock is None:
        return 1
    context = multiprocessing.get_context("spawn")
    # The admission counts (`capacity`): the model's, then one per API key.
    keys = len(read_entries(settings.api_keys, settings.api_keys_file))
    shared = SharedState(
        counts=context.Array("i", COUNTS_BEFORE_KEYS + keys), core_dead=context.RawValue("b", 0)
    )
    processes: list[BaseProcess] = []
    stopping = False

    def on_signal(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        _signal(processes, sig)  # each drains; a second SIGTERM stops each at once

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    manager = engines = None
    listeners = bind_engine_zmq_listeners(vllm_config, count)
    try:
        with (
            tied_engine_cores(),
            launch_core_engines(
                vllm_config, Executor.get_class(vllm_config), True, listeners.addresses
            ) as launch,
        ):
            # vLLM hands `args` to each process's target untouched; its hint names its own
            # argparse namespace.
            front_end: Any = FrontEnd(
                card, settings, vllm_config, shared, engine_args.enable_log_requests
            )
            manager = APIServerProcessManager(
                listen_address=f"http://{settings.host}:{settings.port}",
                sock=sock,
                args=front_end,
                num_servers=count,
                input_listeners=listeners.inputs,
                output_listeners=listeners.outputs,
                target_server_fn=_api_process,
            )
            processes[:] = manager.processes
            launch.watched_frontend_processes = manager.processes  # one dying aborts the start
        engines = launch.engine_manager
        log.info("engine core up; %d API processes: %s", count, [p.pid for p in processes])
        if stopping:
            _signal(processes, signal.SIGTERM)
        return _supervise(processes, engines, shared)
    except Exception:
        log.exception("the engine core or an API process failed to start")
        return 1
    finally:
        if manager is not None:
            manager.shutdown(timeout=5)
        if engines is not None:
            engines.shutdown(timeout=10)
        sock.close()
        metrics_dir.cleanup()


def _signal(processes: list[BaseProcess], sig: int) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, sig)


def _supervise(processes: list[BaseProcess], engines: Any, shared: SharedState) -> int:
    """Wait for every API process; 0 only if each exited 0 with the engine core alive."""
    waiting = {p.sentinel: p for p in processes}
    core = list(engines.sentinels()) if engines is not None else []
    status = 0
    kill_at: float | None = None
    while waiting:
        timeout = None if kill_at is None else max(0.0, kill_at - time.monotonic())
        ready: list[Any] = connection.wait([*waiting, *core], timeout)  # sentinels: ints
        if not ready and kill_at is not None:
            log.error("API processes still running after the engine died: killing them")
            _signal(list(waiting.values()), signal.SIGKILL)
            kill_at = None
            continue
        if core and any(s in core for s in ready):
            log.critical(
                "the engine core died (%s); stopping the API processes", engines.finished_procs()
            )
            shared.core_dead.value = 1  # each process fails its requests and exits 1
            core = []
            status = 1
            kill_at = time.monotonic() + _EXIT_AFTER_CORE_DEATH_S
        for sentinel in ready:
            process = waiting.pop(sentinel, None)
            if process is None:
                continue
            process.join()  # the sentinel fires at exit; the status is read on joining
            if process.exitcode != 0:
                log.error("API process %s exited with %s", process.pid, process.exitcode)
                if status == 0:
                    _signal(list(waiting.values()), signal.SIGTERM)  # the rest drain and stop
                status = 1
    return status


def _api_process(
    listen_address: str, sock: socket.socket, front: FrontEnd, client_config: dict[str, Any]
) -> None:
    """The body of one API process (spawned by vLLM's process manager)."""
    os.setpgid(0, 0)  # signals reach it through the parent, once
    die_with_parent()  # it holds the listening socket: it must not outlive the parent
    from ..engine.served_model import ServedModel
    from ..observability.logs import configure_logging
    from .server import run_server

    settings = front.settings
    configure_logging(settings.log_level)
    client = dict(client_config)
    loads = client.pop("api_server_loads")  # each process's open connections, for accepting
    count = client.pop("client_count")
    index = client.pop("client_index")

    def make_engine(stat_loggers: list[Any]) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_vllm_config(
            front.vllm_config,
            stat_loggers=stat_loggers,
            enable_log_requests=front.log_requests,
            client_addresses=client,
            client_count=count,
            client_index=index,
        )

    status = run_server(
        front.card,
        settings,
        lambda: ServedModel.start(front.card, make_engine),
        sock=sock,
        shared=front.shared,
        peer_loads=(loads, index),
    )
    gc.collect()  # what the app left in reference cycles goes while every module is whole
    sys.exit(status)
