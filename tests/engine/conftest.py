"""A second tiny server for the engine's own settings, shared by the tests that need them: two
tensor-parallel ranks (as the MythoMax card runs on two GPUs), streamed tokens batched eight at
a time (vLLM's `stream_interval`), and prompts and outputs in its access lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import STREAM_INTERVAL, card_variant, server_process


@pytest.fixture(scope="package")
def variant(
    cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """(base URL, log) of the tiny card with TP 2 and a stream interval."""
    tmp = tmp_path_factory.mktemp("variant")
    card = card_variant(
        tmp / "tiny-variant.yaml",
        ("tensor_parallel_size: 1", "tensor_parallel_size: 2"),
        ("  extra_args:\n", f"  extra_args:\n    stream_interval: {STREAM_INTERVAL}\n"),
    )
    log = tmp / "variant.log"
    env = {"DEEPINFRA_SERVE_LOG_CONTENT": "true"}
    with server_process(card, cache_dir, log, env) as (url, _):
        yield url, log
