"""The Batch API on the guarded server (API keys, a limit of 4, its default store SQLite):
files and batches belong to the key that made them, and a batch running takes no room online
requests need."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from ..helpers import (
    GUARDED_LIMIT,
    MODEL,
    batch_line,
    metric_sum,
    upload_batch,
    wait_batch,
)

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


@pytest.fixture(scope="module")
def clients(guarded: tuple[str, Path]) -> Iterator[tuple[openai.OpenAI, openai.OpenAI]]:
    url = f"{guarded[0]}/v1/openai"
    with (
        openai.OpenAI(base_url=url, api_key="secret-inline-1", max_retries=0) as a,
        openai.OpenAI(base_url=url, api_key="secret-inline-2", max_retries=0) as b,
    ):
        yield a, b


def test_files_and_batches_belong_to_their_key(
    clients: tuple[openai.OpenAI, openai.OpenAI], guarded: tuple[str, Path]
) -> None:
    a, b = clients
    lines = [
        batch_line(f"q{i}", COMPLETIONS, model=MODEL, prompt="hi", max_tokens=3) for i in range(3)
    ]
    batch = upload_batch(a, lines, COMPLETIONS)
    done = wait_batch(a, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    assert a.files.content(done.output_file_id).text.count("\n") == 3
    for attempt in (
        lambda: b.batches.retrieve(batch.id),
        lambda: b.batches.cancel(batch.id),
        lambda: b.files.content(done.output_file_id),
        lambda: b.files.retrieve(batch.input_file_id),
        lambda: b.files.delete(batch.input_file_id),
        lambda: b.batches.create(
            input_file_id=batch.input_file_id, endpoint=COMPLETIONS, completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert batch.id not in [x.id for x in b.batches.list().data]
    theirs = {f.id for f in b.files.list().data}
    assert batch.input_file_id not in theirs and done.output_file_id not in theirs
    assert {batch.input_file_id, done.output_file_id} <= {f.id for f in a.files.list().data}
    # Without a key: 401, as every route of the API.
    assert httpx.get(f"{guarded[0]}/v1/openai/batches/{batch.id}").status_code == 401


def test_a_batch_takes_no_room_online_requests_need(
    clients: tuple[openai.OpenAI, openai.OpenAI], guarded: tuple[str, Path]
) -> None:
    """With a batch running in all the idle room, the limit still admits exactly as many
    online requests as without it (the 5th gets "Model busy" either way), the batch's own key
    included, and the lines running make way for them in the engine."""
    a, _ = clients
    url = guarded[0]
    lines = [
        batch_line(f"l{i}", COMPLETIONS, model=MODEL, prompt=f"tell {i}", max_tokens=300)
        for i in range(40)
    ]
    batch = upload_batch(a, lines, COMPLETIONS)

    def running() -> float:
        text = httpx.get(f"{url}/metrics").text
        return metric_sum(text, "deepinfra_batch_open_lines", model=MODEL, state="running")

    wait_batch(a, batch.id, until=lambda _: running() > 0)
    keys = ["secret-inline-1", "secret-inline-2"] * 2 + ["secret-inline-2"]
    with httpx.Client(base_url=url, timeout=120) as c, ThreadPoolExecutor(len(keys)) as pool:

        def online(key: str) -> int:
            r = c.post(
                "/v1/openai/completions",
                json={"model": MODEL, "prompt": "now", "max_tokens": 150},
                headers={"Authorization": f"Bearer {key}"},
            )
            return r.status_code

        statuses = sorted(pool.map(online, keys))
    assert statuses == [200] * GUARDED_LIMIT + [429] * (len(keys) - GUARDED_LIMIT)
    # The lines that were running made way for them: stopped and handed back to run later.
    text = httpx.get(f"{url}/metrics").text
    assert metric_sum(text, "deepinfra_batch_lines_yielded_total", model=MODEL) > 0
    cancelled = a.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled")
    assert wait_batch(a, batch.id).status == "cancelled"
