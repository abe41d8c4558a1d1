"""The Batch API through the fleet's front door: the files and batches routes go to any replica
(they carry no model), and the replicas of the batch's model, sharing the store, both run its
lines."""

from __future__ import annotations

import io

import openai

from ..helpers import (
    FLEET_KEY,
    MODEL,
    RunningFleet,
    batch_line,
    json_log,
    jsonl,
    upload_batch,
    wait_batch,
)

COMPLETIONS = "/v1/completions"


def _ran(fleet: RunningFleet, name: str, batch_id: str) -> int:
    log = fleet.run_dir / "logs" / f"{name}.log"
    lines = json_log(log)
    return sum(1 for x in lines if x.get("batch_id") == batch_id)


def test_both_replicas_run_lines_of_one_batch(fleet: RunningFleet) -> None:
    n = 60
    lines = [
        batch_line(f"f{i}", COMPLETIONS, model=MODEL, prompt=f"fleet {i}", max_tokens=40)
        for i in range(n)
    ]
    with openai.OpenAI(base_url=f"{fleet.url}/v1/openai", api_key=FLEET_KEY, max_retries=0) as oai:
        batch = upload_batch(oai, lines, COMPLETIONS)
        done = wait_batch(oai, batch.id)
        assert done.status == "completed" and done.request_counts.completed == n
        out = jsonl(oai.files.content(done.output_file_id).text)
        assert sorted(o["custom_id"] for o in out) == sorted(f"f{i}" for i in range(n))
        # Whichever replica answers, the same store: the batch is found through each.
        assert oai.batches.retrieve(batch.id).id == batch.id
        assert oai.files.retrieve(done.output_file_id).bytes > 0
        uploaded = oai.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
        assert oai.files.delete(uploaded.id).deleted
    ran = [_ran(fleet, name, batch.id) for name in fleet.replicas if "tiny-random-llama" in name]
    assert sum(ran) == n and all(count > 0 for count in ran), ran
    assert _ran(fleet, "deepinfra-serve-tiny-mistral-0", batch.id) == 0
