"""The Batch API with the official `openai` client, on the session's server (the real engine on
the tiny card; its store the session's PostgreSQL): batches answer as the same requests answer
online, at the card's batch price; bad lines are named; cancel stops the work; uploads are
streamed within their bound."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from deepinfra_serve.config.cards import ModelCard
from deepinfra_serve.config.pricing import estimated_cost

from ..helpers import (
    MODEL,
    batch_line,
    eventually,
    json_log,
    jsonl,
    metric_sum,
    upload_batch,
    wait_batch,
)

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
LINES = 100


@pytest.fixture(scope="module")
def oai(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1/openai", api_key="unused", max_retries=0) as c:
        yield c


def _chat(i: int) -> dict[str, Any]:
    # Lines in pairs that share a prompt's start: they run side by side.
    content = f"Say something about topic {i % 10} and number {i}."
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 6}


def _completion(i: int) -> dict[str, Any]:
    return {"model": MODEL, "prompt": f"Once upon a time {i} times", "max_tokens": 6}


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between two runs of one request: ids, times, cost."""
    usage = {k: v for k, v in body["usage"].items() if k != "estimated_cost"}
    return {k: v for k, v in body.items() if k not in ("id", "created", "usage")} | {"usage": usage}


def _cost(card: ModelCard, usage: dict[str, Any], multiplier: float) -> float:
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return estimated_cost(
        card.pricing, usage["prompt_tokens"], usage["completion_tokens"], cached, multiplier
    )


def test_batches_answer_as_online_at_the_batch_price(
    oai: openai.OpenAI, base_url: str, tiny_card: ModelCard, server_log: Path
) -> None:
    bodies = {
        CHAT: [{**_chat(i), "temperature": 0} for i in range(LINES)],
        COMPLETIONS: [{**_completion(i), "temperature": 0} for i in range(LINES)],
    }
    created = {
        endpoint: upload_batch(
            oai,
            [batch_line(f"{endpoint}-{i}", endpoint, **b) for i, b in enumerate(lines)],
            endpoint,
            metadata={"eval": "nightly"},
        )
        for endpoint, lines in bodies.items()
    }
    for batch in created.values():
        assert batch.status == "in_progress" and batch.request_counts.total == LINES
        assert batch.model == MODEL and batch.metadata == {"eval": "nightly"}

    multiplier = tiny_card.pricing.batch_multiplier
    assert multiplier == 0.8
    for endpoint, batch in created.items():
        done = wait_batch(oai, batch.id)
        assert done.status == "completed", done
        assert done.request_counts.completed == LINES and done.request_counts.failed == 0
        assert done.error_file_id is None and done.completed_at >= done.in_progress_at
        out = jsonl(oai.files.content(done.output_file_id).text)
        assert [o["custom_id"] for o in out] == [f"{endpoint}-{i}" for i in range(LINES)]
        # The same requests online, at temperature 0.
        path = "/v1/openai" + endpoint.removeprefix("/v1")
        with (
            httpx.Client(base_url=base_url, timeout=60) as http,
            ThreadPoolExecutor(8) as pool,
        ):
            online = list(pool.map(lambda b, p=path: http.post(p, json=b).json(), bodies[endpoint]))
        total = 0.0
        for line, answer in zip(out, online, strict=True):
            assert line["error"] is None and line["response"]["status_code"] == 200
            body = line["response"]["body"]
            assert body["id"].endswith(line["response"]["request_id"])
            assert _comparable(body) == _comparable(answer)
            # Billed at the batch price: 0.8x what the same tokens cost online.
            assert body["usage"]["estimated_cost"] == pytest.approx(
                _cost(tiny_card, body["usage"], multiplier), rel=1e-9
            )
            assert answer["usage"]["estimated_cost"] == pytest.approx(
                _cost(tiny_card, answer["usage"], 1.0), rel=1e-9
            )
            total += body["usage"]["estimated_cost"]
        assert done.usage.estimated_cost == pytest.approx(total, rel=1e-9)
        prompt_tokens = [o["response"]["body"]["usage"]["prompt_tokens"] for o in out]
        assert done.usage.input_tokens == sum(prompt_tokens)
        assert oai.batches.retrieve(batch.id).output_file_id == done.output_file_id

    # Each line's access line names its batch and custom_id, at the batch tier.
    access = json_log(server_log)
    mine = [x for x in access if x.get("batch_id") == created[CHAT].id]
    assert {x["via"] for x in mine} == {"batch"}
    assert len(mine) == LINES and {x["service_tier"] for x in mine} == {"batch"}
    assert sorted(x["custom_id"] for x in mine) == sorted(f"{CHAT}-{i}" for i in range(LINES))
    metrics = httpx.get(f"{base_url}/metrics").text

    def completed() -> float:
        text = httpx.get(f"{base_url}/metrics").text
        return metric_sum(text, "deepinfra_batches", model=MODEL, status="completed")

    eventually(lambda: completed() >= 2, timeout=15)  # the store's counts, every 5 s
    assert metric_sum(metrics, "deepinfra_batch_lines_total", model=MODEL, state="done") >= 200
    listed = oai.batches.list(limit=2)
    assert [b.id for b in listed.data] == [created[COMPLETIONS].id, created[CHAT].id]


def test_every_bad_line_is_named(oai: openai.OpenAI) -> None:
    good = batch_line("ok", CHAT, **_chat(0))
    lines = [
        good,
        "{not json",
        json.dumps({"custom_id": "m", "method": "GET", "url": CHAT, "body": _chat(1)}),
        batch_line("u", COMPLETIONS, **_completion(1)),
        batch_line("ok", CHAT, **_chat(2)),
        batch_line("s", CHAT, **_chat(3), stream=True),
        batch_line("w", CHAT, **_chat(4), webhook="http://127.0.0.2:9/hook"),
        batch_line("t", CHAT, **{**_chat(5), "temperature": 7}),
        batch_line("x", CHAT, **{**_chat(6), "model": "nobody/nothing"}),
        batch_line("p", CHAT, **_chat(7), service_tier="priority"),
        json.dumps({"method": "POST", "url": CHAT, "body": _chat(8)}),
    ]
    batch = upload_batch(oai, lines, CHAT)
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.request_counts.total == 0
    got = [(e.line, e.code, e.param) for e in batch.errors.data]
    assert got == [
        (2, "invalid_json_line", None),
        (3, "invalid_method", "method"),
        (4, "invalid_url", "url"),
        (5, "duplicate_custom_id", "custom_id"),
        (6, "invalid_request", "body.stream"),
        (7, "invalid_request", "body.webhook"),
        (8, "invalid_request", "body.temperature"),
        (9, "invalid_request", "body.model"),
        (10, "invalid_request", "body.service_tier"),
        (11, "missing_required_parameter", "custom_id"),
    ]
    assert "temperature" in batch.errors.data[6].message
    # Nothing of it runs; it is listed as failed.
    assert oai.batches.retrieve(batch.id).status == "failed"
    # The request itself: its fields by name.
    with pytest.raises(openai.NotFoundError):
        oai.batches.create(input_file_id="file-none", endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        oai.batches.create(
            input_file_id="file-x",
            endpoint="/v1/embeddings",  # type: ignore[arg-type]
            completion_window="24h",
        )
    assert bad.value.body["param"] == "endpoint"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        oai.batches.create(
            input_file_id="file-x",
            endpoint=CHAT,
            completion_window="24h",
            metadata={str(i): "v" for i in range(17)},
        )
    assert bad.value.body["param"] == "metadata"  # type: ignore[index]


def test_too_many_lines(oai: openai.OpenAI) -> None:
    line = batch_line("{}", COMPLETIONS, model=MODEL, prompt="a")
    text = "\n".join(line.replace('"{}"', f'"{i}"') for i in range(50_001))
    uploaded = oai.files.create(file=("big.jsonl", io.BytesIO(text.encode())), purpose="batch")
    batch = oai.batches.create(
        input_file_id=uploaded.id, endpoint=COMPLETIONS, completion_window="24h"
    )
    assert batch.status == "failed"
    assert [(e.code, e.param) for e in batch.errors.data] == [
        ("too_many_requests", "input_file_id")
    ]
    oai.files.delete(uploaded.id)


def test_cancel_stops_the_work_and_keeps_what_finished(oai: openai.OpenAI) -> None:
    n = 400
    lines = [
        batch_line(f"c{i}", COMPLETIONS, **{**_completion(i), "max_tokens": 400}) for i in range(n)
    ]
    batch = upload_batch(oai, lines, COMPLETIONS)
    wait_batch(oai, batch.id, until=lambda b: b.request_counts.completed >= 1)
    cancelling = oai.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    started = time.monotonic()
    done = wait_batch(oai, batch.id)
    # Lines in flight are aborted in the engine, not run to their end.
    assert done.status == "cancelled" and time.monotonic() - started < 15
    counts = done.request_counts
    assert counts.total == n and counts.completed >= 1 and counts.completed + counts.failed == n
    out = jsonl(oai.files.content(done.output_file_id).text)
    errors = jsonl(oai.files.content(done.error_file_id).text)
    assert len(out) == counts.completed and len(errors) == counts.failed
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert {o["custom_id"] for o in out}.isdisjoint(e["custom_id"] for e in errors)
    with pytest.raises(openai.ConflictError):
        oai.batches.cancel(batch.id)


def _server_process(base_url: str) -> psutil.Process:
    port = int(base_url.rsplit(":", 1)[1])
    pid = next(
        c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid
    )
    return psutil.Process(pid)


def test_uploads_stream_to_the_store_within_their_bound(base_url: str) -> None:
    """A 200 MB upload moves the server's memory by less than 64 MiB; one byte more is 413."""
    bound = 200 * 1024 * 1024
    server = _server_process(base_url)
    block = (json.dumps({"custom_id": "x" * 100}) + "\n").encode() * 8000

    def body(size: int) -> Iterator[bytes]:
        yield (
            b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
            b"Content-Type: application/jsonl\r\n\r\n"
        )
        sent = 0
        while sent < size:
            part = block[: size - sent]
            sent += len(part)
            yield part
        yield b"\r\n--b--\r\n"

    peak = [server.memory_info().rss]
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            peak.append(server.memory_info().rss)
            time.sleep(0.05)

    before = server.memory_info().rss
    watcher = threading.Thread(target=watch)
    watcher.start()
    headers = {"content-type": "multipart/form-data; boundary=b"}
    try:
        with httpx.Client(base_url=base_url, timeout=300) as c:
            r = c.post("/v1/openai/files", content=body(bound), headers=headers)
            assert r.status_code == 200, r.text
            uploaded = r.json()
            assert uploaded["bytes"] == bound and uploaded["filename"] == "big.jsonl"
            over = c.post("/v1/openai/files", content=body(bound + 1), headers=headers)
            assert over.status_code == 413 and over.json()["error"]["param"] == "file"
            # The whole file comes back, byte for byte in size.
            size = 0
            with c.stream("GET", f"/v1/openai/files/{uploaded['id']}/content") as s:
                for chunk in s.iter_bytes():
                    size += len(chunk)
            assert size == bound
            assert c.delete(f"/v1/openai/files/{uploaded['id']}").json()["deleted"] is True
            assert c.get(f"/v1/openai/files/{uploaded['id']}").status_code == 404
    finally:
        watching.set()
        watcher.join()
    assert max(peak) - before < 64 * 1024 * 1024, (before, max(peak))
    # The 413's partial file is gone: only finished uploads are listed.
    listed = httpx.get(f"{base_url}/v1/openai/files").json()["data"]
    assert all(f["bytes"] <= bound for f in listed)
