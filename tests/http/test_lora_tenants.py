"""LoRA adapters on the guarded server (API keys, SQLite): an adapter added at run time
belongs to the key that added it, the bounds on adapters per key (429) and per model (409),
and an adapter's requests count against the key's limit together with its base's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from ..helpers import CHAT, GUARDED_KEY_LIMIT, HELLO, MODEL

PIRATE = "deepinfra-serve/tiny-random-llama-pirate"
A = {"Authorization": "Bearer secret-from-file"}  # its own limit: 2
B = {"Authorization": "Bearer secret-inline-1"}
C = {"Authorization": "Bearer secret-inline-2"}
LONG = {"messages": HELLO, "max_tokens": 1000, "temperature": 0, "stream": True}
SHORT = {"messages": HELLO, "max_tokens": 2}


def _add(c: httpx.Client, key: dict[str, str], name: str, folder: Path) -> httpx.Response:
    return c.post(
        "/lora-model",
        json={"lora_model_name": name, "hf_model_name": str(folder)},
        headers=key,
    )


def test_an_added_adapter_is_its_keys_alone_and_bounded(
    guarded: tuple[str, Path], adapter_dir: Path
) -> None:
    url, _ = guarded
    green, blue = adapter_dir / "green", adapter_dir / "blue"
    with httpx.Client(base_url=url, timeout=60) as c:
        assert _add(c, {}, "keyless/green", green).status_code == 401
        assert _add(c, B, "b/green", green).status_code == 200
        mine = c.post(CHAT, json={"model": "b/green", **SHORT}, headers=B)
        assert mine.status_code == 200 and mine.json()["model"] == "b/green"
        # Another key: the adapter does not exist for it, to call, list or delete.
        theirs = c.post(CHAT, json={"model": "b/green", **SHORT}, headers=C)
        assert theirs.status_code == 404 and theirs.json()["error"]["param"] == "model"
        listed = [m["model_name"] for m in c.get("/models/lora/list", headers=C).json()]
        assert "b/green" not in listed and PIRATE in listed
        assert "b/green" in [m["model_name"] for m in c.get("/models/lora/list", headers=B).json()]
        assert c.delete("/lora-model/b/green", headers=C).status_code == 404

        # Two adapters a key (max_added_per_key), four the model (max_added).
        assert _add(c, B, "b/blue", blue).status_code == 200
        third = _add(c, B, "b/third", blue)
        assert third.status_code == 429 and "max_added_per_key" in third.json()["error"]
        assert [_add(c, C, f"c/{n}", blue).status_code for n in ("one", "two")] == [200, 200]
        fifth = _add(c, A, "a/fifth", blue)
        assert fifth.status_code == 409 and "max_added" in fifth.json()["error"]
        for name, key in (("b/green", B), ("b/blue", B), ("c/one", C), ("c/two", C)):
            assert c.delete(f"/lora-model/{name}", headers=key).status_code == 200
        assert c.post(CHAT, json={"model": "b/green", **SHORT}, headers=B).status_code == 404


def test_an_adapters_requests_count_with_its_bases_against_the_keys_limit(
    guarded: tuple[str, Path],
) -> None:
    url, _ = guarded

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as ac:
            held = [
                ac.stream("POST", CHAT, json={"model": model, **LONG}, headers=A)
                for model in (MODEL, PIRATE)
            ]
            streams = [await h.__aenter__() for h in held]
            assert [r.status_code for r in streams] == [200] * GUARDED_KEY_LIMIT
            third = [
                await ac.post(CHAT, json={"model": model, **SHORT}, headers=A)
                for model in (MODEL, PIRATE)
            ]
            other = await ac.post(CHAT, json={"model": PIRATE, **SHORT}, headers=B)
            for h in held:
                await h.__aexit__(None, None, None)
        for r in third:
            assert r.status_code == 429, r.text
            assert r.json()["error"]["message"] == "Rate limited"
        assert other.status_code == 200

    asyncio.run(scenario())
