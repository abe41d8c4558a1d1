"""Nothing accepted is lost: a server killed (SIGKILL, as the OOM killer sends it) with a batch
half done and a webhook job not yet run, then started again on the same PostgreSQL store,
finishes the batch (each line once, billed once) and delivers the webhook. The server started
again has a short completion window, so a batch it takes then expires; stopped with SIGTERM while
lines run, it hands them back at once rather than waiting for them."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from deepinfra_serve.store.database import Store

from ..helpers import (
    INFERENCE,
    MODEL,
    TINY_CARD,
    Receiver,
    batch_line,
    json_log,
    jsonl,
    postgres_database,
    receiving,
    server_process,
    upload_batch,
    wait_batch,
)

COMPLETIONS = "/v1/completions"
LEASE_S = 2


@pytest.fixture(scope="module")
def env(postgres_url: str | None, adapter_dir: Path) -> dict[str, str]:
    if postgres_url is None:
        pytest.skip("Debian's postgresql is not installed here (`make test` installs it)")
    return {
        "DEEPINFRA_SERVE_STORE_URL": postgres_database(postgres_url, "restart"),
        "DEEPINFRA_SERVE_BATCH_LEASE_S": str(LEASE_S),
        # Room for 8 lines at a time: the batch is still half done when the server is killed.
        "DEEPINFRA_SERVE_MAX_CONCURRENT_REQUESTS": "8",
        "DEEPINFRA_SERVE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.2/32",
        "DEEPINFRA_SERVE_WEBHOOK_BACKOFF_S": "0.05",
        # Another model behind the same base URL: a batch may not mix them.
        "DEEPINFRA_SERVE_FLEET_CARDS": str(TINY_CARD.parent / "tiny-mistral.yaml"),
        "DEEPINFRA_SERVE_ADAPTER_DIRS": str(adapter_dir),
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as r:
        yield r


def _access(log: Path, batch_id: str) -> list[dict[str, object]]:
    lines = json_log(log)
    return [x for x in lines if x.get("batch_id") == batch_id]


def _kill(proc: object) -> None:
    """SIGKILL the server; its engine core and workers follow it (killed by pid if not)."""
    import subprocess

    assert isinstance(proc, subprocess.Popen)
    family = psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait()
    _, alive = psutil.wait_procs(family, timeout=15)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def test_a_killed_server_loses_nothing_accepted(
    env: dict[str, str], cache_dir: Path, tmp_path: Path, receiver: Receiver, adapter_dir: Path
) -> None:
    n = 40
    lines = [
        batch_line(f"k{i}", COMPLETIONS, model=MODEL, prompt=f"line {i}", max_tokens=120)
        for i in range(n)
    ]
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with server_process(TINY_CARD, cache_dir, first_log, env) as (url, proc):
        with openai.OpenAI(base_url=f"{url}/v1/openai", api_key="x", max_retries=0) as oai:
            mixed = upload_batch(
                oai,
                [
                    batch_line("a", COMPLETIONS, model=MODEL, prompt="a"),
                    batch_line("b", COMPLETIONS, model="deepinfra-serve/tiny-mistral", prompt="b"),
                ],
                COMPLETIONS,
            )
            assert mixed.status == "failed"
            assert [(e.line, e.code, e.param) for e in mixed.errors.data] == [
                (2, "mismatched_model", "body.model")
            ]
            batch = upload_batch(oai, lines, COMPLETIONS)
            wait_batch(oai, batch.id, until=lambda b: b.request_counts.completed >= 5)
        # A LoRA adapter added at run time: kept in the store, files and all.
        greedy = {"model": "restart/green", "prompt": "Hi", "max_tokens": 8, "temperature": 0}
        added = httpx.post(
            f"{url}/lora-model",
            json={"lora_model_name": "restart/green", "hf_model_name": str(adapter_dir / "green")},
            timeout=30,
        )
        assert added.status_code == 200, added.text
        green = httpx.post(f"{url}/v1/openai/completions", json=greedy, timeout=30).json()
        # A webhook request, answered queued, its generation far from done.
        job = {"input": "Hello", "max_new_tokens": 900, "webhook": receiver.url}
        queued = httpx.post(f"{url}{INFERENCE}", json=job, timeout=30).json()
        assert queued["inference_status"]["status"] == "queued"
        _kill(proc)
    assert receiver.bodies == []
    assert sum(x["status"] == 200 for x in _access(first_log, batch.id)) < n

    restarted = {**env, "DEEPINFRA_SERVE_BATCH_WINDOW_S": "4"}
    with (
        server_process(TINY_CARD, cache_dir, second_log, restarted) as (url, second),
        openai.OpenAI(base_url=f"{url}/v1/openai", api_key="x", max_retries=0) as oai,
    ):
        # The restarted server (another data folder) serves the adapter from the store alone.
        again = httpx.post(f"{url}/v1/openai/completions", json=greedy, timeout=30).json()
        assert again["model"] == "restart/green"
        assert again["choices"][0]["text"] == green["choices"][0]["text"]
        done = wait_batch(oai, batch.id)
        assert done.status == "completed" and done.request_counts.completed == n
        out = jsonl(oai.files.content(done.output_file_id).text)
        ids = [o["custom_id"] for o in out]
        assert sorted(ids) == sorted(f"k{i}" for i in range(n)) and len(set(ids)) == n
        # Billed once per line: the access lines of both runs add up to the batch's lines
        # (those of runs that made way for online work, 499, bill nothing).
        runs = _access(first_log, batch.id) + _access(second_log, batch.id)
        assert all(x["estimated_cost"] == 0 for x in runs if x["status"] != 200)
        billed = [x for x in runs if x["status"] == 200]
        assert sorted(str(x["custom_id"]) for x in billed) == sorted(ids)
        lines_usd = sum(o["response"]["body"]["usage"]["estimated_cost"] for o in out)
        assert sum(float(x["estimated_cost"]) for x in billed) == pytest.approx(lines_usd)
        assert done.usage.estimated_cost == pytest.approx(lines_usd)

        # The webhook job the killed server accepted is run here and delivered.
        receiver.wait_for(lambda: receiver.bodies, timeout=120)
        [delivered] = receiver.bodies
        assert delivered["request_id"] == queued["request_id"]
        assert delivered["inference_status"]["status"] == "succeeded"

        # A batch made here expires 4 s on: what ran is kept, the rest is batch_expired.
        long = [
            batch_line(f"e{i}", COMPLETIONS, model=MODEL, prompt=f"e {i}", max_tokens=600)
            for i in range(300)
        ]
        started = time.monotonic()
        expiring = upload_batch(oai, long, COMPLETIONS)
        assert expiring.expires_at - expiring.created_at == 4
        ended = wait_batch(oai, expiring.id, timeout_s=120)
        assert ended.status == "expired" and ended.expired_at is not None
        assert time.monotonic() - started >= 3
        counts = ended.request_counts
        assert counts.failed > 0 and counts.completed + counts.failed == 300
        errors = jsonl(oai.files.content(ended.error_file_id).text)
        assert {e["error"]["code"] for e in errors} == {"batch_expired"}
        assert len(errors) == counts.failed

        # SIGTERM with lines running: the drain hands them back at once, waiting for none.
        draining = upload_batch(oai, long[:50], COMPLETIONS)
        wait_batch(oai, draining.id, until=lambda b: _states(env, draining.id).get("running"))
        started = time.monotonic()
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
        assert time.monotonic() - started < 15
    states = _states(env, draining.id)
    assert "running" not in states and states.get("waiting", 0) > 0, states


def _states(env: dict[str, str], batch_id: str) -> dict[str, int]:
    """The batch's lines by state, as the store holds them."""
    from sqlalchemy import func, select

    from deepinfra_serve.store.tables import batch_lines

    store = Store.open(env["DEEPINFRA_SERVE_STORE_URL"], Path("/nonexistent"))
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(batch_lines.c.state, func.count())
                .where(batch_lines.c.batch_id == batch_id)
                .group_by(batch_lines.c.state)
            ).all()
        return {state: count for state, count in rows}
    finally:
        store.close()
