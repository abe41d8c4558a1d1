"""A tiny server for the checks at the HTTP edge that change what every request meets, shared
by them: API keys (inline and from a file, one with its own limit of 2), a concurrency limit of
4 (priority's reserve: 1 more; flex's share: 2), an engine that runs 3 sequences at once (so
that requests wait in its queue), flex waits of 1 s, webhooks allowed to the receivers on
127.0.0.2, short bounds on how long a request may take to arrive, how many connections are
held and how many body bytes may be arriving at once, and its spans sent over OTLP/gRPC to the
tests' stand-in for a collector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ..collector import Collector, grpc_collector
from ..helpers import (
    GUARDED_ENGINE_SEQS,
    GUARDED_FLEX_WAIT_S,
    GUARDED_KEY_LIMIT,
    GUARDED_LIMIT,
    GUARDED_MAX_CONNECTIONS,
    GUARDED_PENDING_BYTES,
    GUARDED_READ_TIMEOUT_S,
    TINY_CARD,
    server_process,
)


@pytest.fixture(scope="package")
def guarded_collector() -> Iterator[tuple[str, Collector]]:
    """(endpoint, spans received) of the OTLP receiver the guarded server exports to."""
    with grpc_collector() as received:
        yield received


@pytest.fixture(scope="package")
def guarded(
    cache_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    adapter_dir: Path,
    guarded_collector: tuple[str, Collector],
) -> Iterator[tuple[str, Path]]:
    """(base URL, log) of the guarded server."""
    work = tmp_path_factory.mktemp("guarded")
    keys = work / "api-keys"
    keys.write_text(f"# mounted from a Secret\nsecret-from-file rate_limit={GUARDED_KEY_LIMIT}\n")
    card = yaml.safe_load(TINY_CARD.read_text())
    card["engine"]["extra_args"]["max_num_seqs"] = GUARDED_ENGINE_SEQS
    card_path = work / "tiny-random.yaml"
    card_path.write_text(yaml.safe_dump(card))
    log = work / "server.log"
    env = {
        "DEEPINFRA_SERVE_API_KEYS": "secret-inline-1, secret-inline-2",
        "DEEPINFRA_SERVE_API_KEYS_FILE": str(keys),
        "DEEPINFRA_SERVE_MAX_CONCURRENT_REQUESTS": str(GUARDED_LIMIT),
        "DEEPINFRA_SERVE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2/32",
        "DEEPINFRA_SERVE_READ_TIMEOUT_S": str(GUARDED_READ_TIMEOUT_S),
        "DEEPINFRA_SERVE_MAX_CONNECTIONS": str(GUARDED_MAX_CONNECTIONS),
        "DEEPINFRA_SERVE_MAX_PENDING_BODY_BYTES": str(GUARDED_PENDING_BYTES),
        "DEEPINFRA_SERVE_FLEX_MAX_WAIT_S": str(GUARDED_FLEX_WAIT_S),
        "DEEPINFRA_SERVE_ADAPTER_DIRS": str(adapter_dir),
        # Traced: OpenTelemetry's own settings; spans exported every 0.1 s, not every 5.
        "OTEL_EXPORTER_OTLP_ENDPOINT": guarded_collector[0],
        "OTEL_SERVICE_NAME": "guarded",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with server_process(card_path, cache_dir, log, env) as (url, _):
        yield url, log
