"""The usage ledger behind the fleet's front door: requests served by different replicas of
different models, each writing its own entries to the shared PostgreSQL, are priced by
`POST /v1/request-costs` through the one base URL, whichever replica answers it."""

from __future__ import annotations

import json

import httpx

from ..helpers import FLEET_KEY, FLEET_LIMITED_KEY, MISTRAL, MODEL, RunningFleet, eventually


def _served_by(fleet: RunningFleet, request_ids: set[str]) -> set[str]:
    """The replicas whose access lines name any of `request_ids`."""
    names = set()
    for name in fleet.replicas:
        log = fleet.run_dir / "logs" / f"{name}.log"
        for line in log.read_text().splitlines():
            if line.startswith("{") and json.loads(line).get("request_id") in request_ids:
                names.add(name)
    return names


def test_request_costs_through_the_front_door_span_every_replica(fleet: RunningFleet) -> None:
    headers = {"Authorization": f"Bearer {FLEET_KEY}"}
    billed: dict[str, float] = {}
    with httpx.Client(base_url=fleet.url, headers=headers, timeout=60) as client:
        # Prompts of their own: the front door hashes a prompt's start to pick a replica, and
        # 16 distinct ones all on one of two replicas is a chance of 2 in 65,536.
        for i, model in enumerate([MODEL] * 16 + [MISTRAL] * 2):
            messages = [{"role": "user", "content": f"Hello number {i}"}]
            body = {"model": model, "messages": messages, "max_tokens": 2}
            answer = client.post("/v1/openai/chat/completions", json=body)
            assert answer.status_code == 200, answer.text
            billed[answer.json()["id"]] = answer.json()["usage"]["estimated_cost"]
        expected = {i: round(cost * 1e9) for i, cost in billed.items()}

        def priced() -> dict[str, int]:
            answer = client.post("/v1/request-costs", json={"requestIds": list(billed)})
            assert answer.status_code == 200, answer.text
            return {r["requestId"]: r["costNanoUsd"] for r in answer.json()["requests"]}

        eventually(lambda: priced() == expected, 15, "every replica's ledger entries")
        # Another key learns nothing of them.
        other = client.post(
            "/v1/request-costs",
            json={"requestIds": list(billed)},
            headers={"Authorization": f"Bearer {FLEET_LIMITED_KEY}"},
        )
        assert other.json() == {"requests": []}
    served = _served_by(fleet, {i.removeprefix("chatcmpl-") for i in billed})
    assert len(served) == 3, served  # both llama replicas and the mistral one
