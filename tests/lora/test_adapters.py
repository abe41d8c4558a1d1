"""LoRA adapters on the session server (the real CPU engine, the tiny card): the card's
adapter through every API and a batch, priced at 1.5x and listed with its base; adapters
added at run time from the folder the server may load from, every bad one refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from deepinfra_serve.config.cards import ModelCard
from deepinfra_serve.config.pricing import estimated_cost

from ..helpers import batch_line, jsonl, upload_batch, wait_batch

BASE = "deepinfra-serve/tiny-random-llama"
PIRATE = "deepinfra-serve/tiny-random-llama-pirate"  # the card's adapter
PROMPT = "The capital of France is"
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 12}


def _cost(card: ModelCard, usage: dict[str, Any], multiplier: float = 1.0) -> float:
    return estimated_cost(
        card.pricing,
        usage["prompt_tokens"],
        usage["completion_tokens"],
        (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
        multiplier,
    )


def _complete(client: httpx.Client, model: str) -> dict[str, Any]:
    r = client.post("/v1/openai/completions", json={"model": model, "prompt": PROMPT, **GREEDY})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_cards_adapter_changes_the_answer_and_costs_half_as_much_again(
    client: httpx.Client, tiny_card: ModelCard
) -> None:
    base, first, again = (_complete(client, m) for m in (BASE, PIRATE, PIRATE))
    assert first["choices"][0]["text"] != base["choices"][0]["text"]
    assert again["choices"][0]["text"] == first["choices"][0]["text"]
    assert (first["model"], base["model"]) == (PIRATE, BASE)
    assert base["usage"]["estimated_cost"] == _cost(tiny_card, base["usage"])
    assert first["usage"]["estimated_cost"] == _cost(tiny_card, first["usage"], 1.5)
    # MODEL:VERSION as for models: the card's adapter is at version 1.
    assert _complete(client, f"{PIRATE}:1")["choices"][0]["text"] == first["choices"][0]["text"]
    r = client.post("/v1/openai/completions", json={"model": f"{PIRATE}:2", "prompt": PROMPT})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_the_adapter_through_chat_native_and_messages(
    base_url: str, client: httpx.Client, tiny_card: ModelCard
) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    chat = openai.OpenAI(base_url=f"{base_url}/v1/openai", api_key="x", max_retries=0)
    texts = {}
    for model in (BASE, PIRATE):
        out = chat.chat.completions.create(model=model, messages=messages, **GREEDY)
        assert out.model == model
        texts[model] = out.choices[0].message.content
        assert out.usage is not None
        multiplier = 1.5 if model == PIRATE else 1.0
        assert out.usage.model_dump()["estimated_cost"] == _cost(
            tiny_card, out.usage.model_dump(), multiplier
        )
    assert texts[BASE] != texts[PIRATE]

    native = {}
    for model in (BASE, PIRATE):
        r = client.post(
            f"/v1/inference/{model}", json={"input": PROMPT, "max_new_tokens": 12, "temperature": 0}
        )
        assert r.status_code == 200, r.text
        native[model] = r.json()
    assert (
        native[PIRATE]["results"][0]["generated_text"]
        == _complete(client, PIRATE)["choices"][0]["text"]
    )
    status = native[PIRATE]["inference_status"]
    assert status["cost"] == estimated_cost(
        tiny_card.pricing, status["tokens_input"], status["tokens_generated"], 0, 1.5
    )

    messages_client = anthropic.Anthropic(
        base_url=f"{base_url}/anthropic", api_key="x", max_retries=0
    )
    said = {}
    for model in (BASE, PIRATE):
        msg = messages_client.messages.create(
            model=model,
            max_tokens=12,
            messages=[{"role": "user", "content": PROMPT}],
            extra_body={"temperature": 0},
        )
        assert msg.model == model
        said[model] = msg.content[0].text
    assert said[BASE] != said[PIRATE]


def test_a_batch_line_names_the_adapter(base_url: str, tiny_card: ModelCard) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1/openai", api_key="x", max_retries=0)
    lines = [
        batch_line(name, "/v1/completions", model=model, prompt=PROMPT, **GREEDY)
        for name, model in (("base", BASE), ("pirate", PIRATE))
    ]
    # Every line of a batch names one model: the adapter's lines make a batch of their own.
    mixed = wait_batch(client, upload_batch(client, lines, "/v1/completions").id)
    assert mixed.status == "failed"
    assert mixed.errors.data[0].code == "mismatched_model"
    batch = wait_batch(client, upload_batch(client, lines[1:], "/v1/completions").id)
    assert batch.status == "completed", batch
    assert batch.model == PIRATE
    out = jsonl(client.files.content(batch.output_file_id).text)
    body = out[0]["response"]["body"]
    assert body["model"] == PIRATE
    online = _complete(httpx.Client(base_url=base_url), PIRATE)
    assert body["choices"][0]["text"] == online["choices"][0]["text"]
    assert body["usage"]["estimated_cost"] == _cost(tiny_card, body["usage"], 1.5 * 0.8)


def test_the_adapter_is_listed_with_its_base(client: httpx.Client) -> None:
    models = {m["id"]: m for m in client.get("/v1/openai/models").json()["data"]}
    assert models[PIRATE]["parent"] == BASE and models[BASE]["parent"] is None
    assert models[PIRATE]["metadata"]["pricing"] == {
        "input_tokens": 1.5,
        "output_tokens": 3.0,
        "cache_read_tokens": 0.375,
    }
    assert client.get(f"/v1/openai/models/{PIRATE}").json() == models[PIRATE]
    listed = {m["model_name"]: m for m in client.get("/models/list").json()}
    assert listed[PIRATE]["type"] == "lora"
    info = client.get(f"/models/{PIRATE}:1").json()
    assert (info["model_name"], info["version"]) == (PIRATE, "1")
    assert info["pricing"]["cents_per_output_token"] == pytest.approx(3.0e-4)
    loras = [m["model_name"] for m in client.get("/models/lora/list").json()]
    assert PIRATE in loras and BASE not in loras


def _add(client: httpx.Client, name: str, source: str, **extra: Any) -> httpx.Response:
    return client.post(
        "/lora-model", json={"lora_model_name": name, "hf_model_name": source, **extra}
    )


def test_an_adapter_added_at_run_time_is_served_until_deleted(
    client: httpx.Client, adapter_dir: Path, tiny_card: ModelCard
) -> None:
    r = _add(client, "tests/green", str(adapter_dir / "green"))
    assert r.status_code == 200, r.text
    added = r.json()
    assert (added["type"], added["model_name"], added["status"]) == (
        "lora",
        "tests/green",
        "deployed",
    )
    green = _complete(client, "tests/green")
    assert green["model"] == "tests/green"
    texts = {_complete(client, m)["choices"][0]["text"] for m in (BASE, PIRATE)}
    assert green["choices"][0]["text"] not in texts
    assert _complete(client, "tests/green")["choices"][0]["text"] == green["choices"][0]["text"]
    assert green["usage"]["estimated_cost"] == _cost(tiny_card, green["usage"], 1.5)
    loras = [m["model_name"] for m in client.get("/models/lora/list").json()]
    assert "tests/green" in loras

    r = client.delete("/lora-model/tests/green")
    assert r.status_code == 200 and r.json()["status"] == "deleted"
    r = client.post("/v1/openai/completions", json={"model": "tests/green", "prompt": PROMPT})
    assert r.status_code == 404, r.text
    assert client.delete("/lora-model/tests/green").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "field", "says"),
    [
        ({"hf_model_name": "{dir}/rank-32"}, 400, "hf_model_name", "rank 32 is over"),
        ({"hf_model_name": "{dir}/mistral"}, 400, "hf_model_name", "not a LoRA of this model"),
        ({"hf_model_name": "{dir}/prefix"}, 400, "hf_model_name", "not a LoRA adapter"),
        ({"hf_model_name": "{dir}/missing"}, 400, "hf_model_name", "is not a folder"),
        ({"hf_model_name": "{dir}/linked"}, 400, "hf_model_name", "not links"),
        ({"hf_model_name": "{dir}/../weights"}, 400, "hf_model_name", "not inside a folder"),
        ({"hf_model_name": "/etc"}, 400, "hf_model_name", "not inside a folder"),
        ({"hf_model_name": "no such repo"}, 400, "hf_model_name", "a hub repository"),
        ({"base_model_name": "other/model"}, 404, "base_model_name", "is not served here"),
        ({"lora_model_name": BASE}, 409, "lora_model_name", "already a model name"),
        ({"lora_model_name": PIRATE}, 409, "lora_model_name", "already a model name"),
        ({"lora_model_name": "no-owner"}, 422, "lora_model_name", "pattern"),
        ({"lora_model_name": None}, 422, "lora_model_name", ""),
    ],
)
def test_a_bad_adapter_is_refused_by_name(
    client: httpx.Client,
    adapter_dir: Path,
    body: dict[str, Any],
    status: int,
    field: str,
    says: str,
) -> None:
    request = {"lora_model_name": "tests/refused", "hf_model_name": str(adapter_dir / "blue")}
    request.update(
        {k: v.format(dir=adapter_dir) if isinstance(v, str) else v for k, v in body.items()}
    )
    r = client.post("/lora-model", json={k: v for k, v in request.items() if v is not None})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error.startswith(f"{field}:") and says in error
    # Nothing was kept: the name is free and not served.
    assert (
        client.post(
            "/v1/openai/completions", json={"model": "tests/refused", "prompt": PROMPT}
        ).status_code
        == 404
    )


def test_adapters_are_metered_and_logged_by_name(client: httpx.Client, server_log: Path) -> None:
    _complete(client, PIRATE)
    text = client.get("/metrics").text
    assert f'deepinfra_adapter_requests_total{{adapter="{PIRATE}",model="{BASE}"}}' in text
    assert (
        f'deepinfra_adapter_estimated_cost_usd_total{{adapter="{PIRATE}",model="{BASE}"}}' in text
    )
    assert "vllm:lora_requests_info{" in text
    assert f'"model":"{BASE}"' in server_log.read_text()
    assert f'"adapter":"{PIRATE}"' in server_log.read_text()
