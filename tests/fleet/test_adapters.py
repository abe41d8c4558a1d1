"""LoRA adapters through the fleet's front door: a card's adapter is routed by the model map to
its base's replicas, one added at run time (kept in the store every replica reads) goes round
the replicas until one of its base serves it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ..helpers import FLEET_KEY, MODEL, RunningFleet

PIRATE = "deepinfra-serve/tiny-random-llama-pirate"
AUTH = {"Authorization": f"Bearer {FLEET_KEY}"}


def _complete(c: httpx.Client, model: str) -> httpx.Response:
    body = {"model": model, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    return c.post("/v1/openai/completions", json=body, headers=AUTH)


def _served_by(fleet: RunningFleet, model: str) -> set[str]:
    """The replicas whose access log names the adapter."""
    return {
        name
        for name in fleet.replicas
        if f'"adapter":"{model}"' in (fleet.run_dir / "logs" / f"{name}.log").read_text()
    }


def test_card_and_added_adapters_through_the_front_door(
    fleet: RunningFleet, adapter_dir: Path
) -> None:
    with httpx.Client(base_url=fleet.url, timeout=60) as c:
        answers = [_complete(c, PIRATE) for _ in range(4)]
        assert [r.status_code for r in answers] == [200] * 4
        assert {r.json()["choices"][0]["text"] for r in answers} == {
            answers[0].json()["choices"][0]["text"]
        }
        assert "tiny-mistral" not in str(_served_by(fleet, PIRATE))

        added = c.post(
            "/lora-model",
            json={
                "lora_model_name": "fleet/green",
                "hf_model_name": str(adapter_dir / "green"),
                "base_model_name": MODEL,
            },
            headers=AUTH,
        )
        assert added.status_code == 200, added.text
        green = [_complete(c, "fleet/green") for _ in range(6)]
        assert [r.status_code for r in green] == [200] * 6, [r.text for r in green]
        assert {r.json()["model"] for r in green} == {"fleet/green"}
        assert len({r.json()["choices"][0]["text"] for r in green}) == 1
        assert _served_by(fleet, "fleet/green") == {
            "deepinfra-serve-tiny-random-llama-0",
            "deepinfra-serve-tiny-random-llama-1",
        }

        assert c.delete("/lora-model/fleet/green", headers=AUTH).status_code == 200
        deadline = time.monotonic() + 15  # every replica asks the store again within 5 s
        while any(_complete(c, "fleet/green").status_code != 404 for _ in range(4)):
            assert time.monotonic() < deadline, "the deleted adapter is still served"
            time.sleep(0.5)
