"""One base URL for the fleet: routing by model, the fleet's model list, pass-through."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import socket
import time
from contextlib import AbstractContextManager

import anthropic
import httpx
import pytest
from openai import OpenAI

from ..helpers import (
    FLEET_KEY,
    FLEET_KEY_LIMIT,
    FLEET_LIMITED_KEY,
    HELLO,
    MISTRAL,
    RunningFleet,
    eventually,
    json_log,
    sse_lines,
)
from ..helpers import FLEET_KEY as KEY
from ..helpers import MODEL as LLAMA

AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def openai_client(fleet: RunningFleet) -> OpenAI:
    return OpenAI(base_url=f"{fleet.url}/v1/openai", api_key=KEY, max_retries=0)


@pytest.mark.parametrize("model", [LLAMA, MISTRAL])
def test_the_openai_client_reaches_each_model_through_one_base_url(
    openai_client: OpenAI, model: str
) -> None:
    messages = [{"role": "user", "content": "Hello!"}]
    chat = openai_client.chat.completions.create(model=model, messages=messages, max_tokens=5)
    assert chat.model == model
    assert chat.usage is not None and chat.usage.completion_tokens >= 1
    assert chat.usage.model_extra["estimated_cost"] > 0

    chunks = list(
        openai_client.chat.completions.create(
            model=model, messages=messages, max_tokens=5, stream=True
        )
    )
    assert {c.model for c in chunks} == {model}
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage is not None

    text = openai_client.completions.create(model=model, prompt="Hello", max_tokens=5)
    assert text.model == model
    assert text.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (LLAMA, "deepinfra-serve-tiny-random-llama-0"),
        (MISTRAL, "deepinfra-serve-tiny-mistral-0"),
    ],
)
def test_the_native_api_reaches_each_model_by_its_path(
    fleet: RunningFleet, model: str, name: str
) -> None:
    body = {
        "input": "Supercalifragilisticexpialidocious antidisestablishmentarianism",
        "max_new_tokens": 3,
    }
    through = httpx.post(f"{fleet.url}/v1/inference/{model}", json=body, headers=AUTH, timeout=60)
    direct = httpx.post(
        f"{fleet.replicas[name]}/v1/inference/{model}", json=body, headers=AUTH, timeout=60
    )
    assert through.status_code == direct.status_code == 200, through.text
    assert through.json()["inference_status"]["status"] == "succeeded"
    # The two models tokenize differently: the same count means the same model answered.
    assert through.json()["num_input_tokens"] == direct.json()["num_input_tokens"]


def test_the_other_models_prompt_counts_differ(fleet: RunningFleet) -> None:
    """What the test above relies on: the two tokenizers give different counts."""
    body = {
        "input": "Supercalifragilisticexpialidocious antidisestablishmentarianism",
        "max_new_tokens": 1,
    }
    counts = {
        model: httpx.post(
            f"{fleet.url}/v1/inference/{model}", json=body, headers=AUTH, timeout=60
        ).json()["num_input_tokens"]
        for model in (LLAMA, MISTRAL)
    }
    assert counts[LLAMA] != counts[MISTRAL]


@pytest.mark.parametrize("path", ["/v1/openai/models", "/v1/models"])
def test_models_lists_the_whole_fleet_with_its_metadata(fleet: RunningFleet, path: str) -> None:
    # Several times: whichever replica answers, the list is the fleet's.
    for _ in range(6):
        listing = httpx.get(fleet.url + path, timeout=10).json()
        assert listing["object"] == "list"
        models = {m["id"]: m for m in listing["data"]}
        # The tiny Llama's LoRA adapter is listed after it, with its own prices.
        assert models.pop(f"{LLAMA}-pirate")["parent"] == LLAMA
        assert set(models) == {LLAMA, MISTRAL}
        for m in models.values():
            assert m["object"] == "model"
            # The tiny Llama's card prices cached tokens apart; the tiny Mistral's does not.
            cache_read = {"cache_read_tokens": 0.25} if m["id"] == LLAMA else {}
            prices = {"input_tokens": 1.0, "output_tokens": 2.0, **cache_read}
            assert m["metadata"]["pricing"] == prices
            assert m["metadata"]["context_length"] == 1024
            assert m["metadata"]["tags"] == m["tags"] == ["test", "cpu", "tools"]
            assert m["metadata"]["description"]
    one = httpx.get(f"{fleet.url}/v1/openai/models/{MISTRAL}", timeout=10).json()
    assert one["id"] == MISTRAL
    # DeepInfra's own model routes, whichever replica answers.
    for _ in range(4):
        info = httpx.get(f"{fleet.url}/models/{MISTRAL}", timeout=10).json()
        assert info["model_name"] == MISTRAL and "tools" in info["tags"]
        listing = httpx.get(f"{fleet.url}/models/list", timeout=10).json()
        assert {m["model_name"] for m in listing} == {LLAMA, f"{LLAMA}-pirate", MISTRAL}


def test_an_unknown_model_is_404_in_each_apis_shape(fleet: RunningFleet) -> None:
    chat = httpx.post(
        f"{fleet.url}/v1/openai/chat/completions",
        json={"model": "nobody/nothing", "messages": [{"role": "user", "content": "hi"}]},
        headers=AUTH,
        timeout=10,
    )
    assert chat.status_code == 404
    assert chat.json()["error"]["code"] == "model_not_found"
    native = httpx.post(
        f"{fleet.url}/v1/inference/nobody/nothing", json={"input": "hi"}, headers=AUTH, timeout=10
    )
    assert native.status_code == 404
    assert native.json() == {"error": "The model `nobody/nothing` does not exist"}


def test_malformed_bodies_get_the_replicas_4xx(fleet: RunningFleet) -> None:
    r = httpx.post(
        f"{fleet.url}/v1/openai/chat/completions",
        content=b'{"model":',
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(
        f"{fleet.url}/v1/chat/completions",
        json={"model": LLAMA, "messages": [{"role": "user", "content": "hi"}], "top_p": 7},
        headers=AUTH,
        timeout=10,
    )
    assert r.status_code == 422
    assert r.json()["error"]["param"] == "top_p"


def test_api_keys_and_request_ids_pass_through(fleet: RunningFleet) -> None:
    body = {"model": LLAMA, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    url = f"{fleet.url}/v1/openai/chat/completions"
    assert httpx.post(url, json=body, timeout=10).status_code == 401
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    r = httpx.post(url, json=body, headers={**AUTH, "X-Request-ID": "fleet-rid-1"}, timeout=30)
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "fleet-rid-1"
    assert r.json()["id"] == "chatcmpl-fleet-rid-1"


LONG_STREAM = {
    "model": LLAMA,
    "stream": True,
    "max_tokens": 1000,
    "messages": [{"role": "user", "content": "a long answer"}],
    # Forces a long answer from the random model (which could end at once by itself).
    "response_format": {"type": "regex", "regex": "([a-z]{6} ){150}"},
}


def long_stream(fleet: RunningFleet) -> AbstractContextManager[httpx.Response]:
    return httpx.stream(
        "POST",
        f"{fleet.url}/v1/openai/chat/completions",
        json=LONG_STREAM,
        headers=AUTH,
        timeout=120,
    )


def test_streams_pass_through_unbuffered(fleet: RunningFleet) -> None:
    """Events arrive as they are generated: a buffering proxy would deliver them all at the
    end, at once."""
    started = time.monotonic()
    arrivals: list[float] = []
    with long_stream(fleet) as r:
        for line in sse_lines(r):
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    assert len(arrivals) > 150
    spread = arrivals[-1] - arrivals[0]
    assert spread > 0.5 * (arrivals[-1] - started), (spread, arrivals[-1] - started)


def test_a_stream_closed_through_the_front_door_aborts_the_engine_request(
    fleet: RunningFleet,
) -> None:
    names = list(fleet.replicas)

    def generated() -> float:
        return sum(fleet.metric(n, "vllm:generation_tokens_total") for n in names)

    before = generated()
    with long_stream(fleet) as r:
        first = next(sse_lines(r))
    assert first.startswith("data: ")
    # Closed after the first event: the replica stops generating long before the 150 words.
    deadline = time.monotonic() + 30
    while sum(fleet.metric(n, "vllm:num_requests_running") for n in names):
        assert time.monotonic() < deadline, "the replica kept generating"
        time.sleep(0.1)
    assert generated() - before < 150


def test_the_two_replicas_of_a_model_both_serve(fleet: RunningFleet) -> None:
    names = ["deepinfra-serve-tiny-random-llama-0", "deepinfra-serve-tiny-random-llama-1"]

    def served() -> list[float]:
        return [fleet.metric(n, "deepinfra_requests_total", api="chat") for n in names]

    before = served()
    for i in range(24):
        body = {
            "model": LLAMA,
            "max_tokens": 2,
            "messages": [{"role": "user", "content": f"Conversation number {i} starts here"}],
        }
        r = httpx.post(
            f"{fleet.url}/v1/openai/chat/completions", json=body, headers=AUTH, timeout=60
        )
        assert r.status_code == 200, r.text
    moved = [after - b for after, b in zip(served(), before, strict=True)]
    assert sum(moved) == 24
    assert all(m >= 3 for m in moved), moved


def test_the_same_prompt_start_goes_to_the_same_replica(fleet: RunningFleet) -> None:
    """Prefix-affine balancing: one conversation stays where its prefix is cached."""
    names = ["deepinfra-serve-tiny-random-llama-0", "deepinfra-serve-tiny-random-llama-1"]

    def served() -> list[float]:
        return [fleet.metric(n, "deepinfra_requests_total", api="chat") for n in names]

    system = {"role": "system", "content": "You are the shared system prompt of this test."}
    before = served()
    for i in range(6):
        body = {
            "model": LLAMA,
            "max_tokens": 2,
            "messages": [system, {"role": "user", "content": f"question {i}"}],
        }
        r = httpx.post(
            f"{fleet.url}/v1/openai/chat/completions", json=body, headers=AUTH, timeout=60
        )
        assert r.status_code == 200
    moved = sorted(after - b for after, b in zip(served(), before, strict=True))
    assert moved == [0, 6]


def test_a_sessions_turns_follow_its_prompt_cache_key(fleet: RunningFleet) -> None:
    """8 sessions of 6 turns that share one system prompt (alone, it would send them all to
    one replica), each with its own `prompt_cache_key`: every turn of a session goes to one
    replica, where its growing conversation is cached, and the sessions spread over both."""
    names = ["deepinfra-serve-tiny-random-llama-0", "deepinfra-serve-tiny-random-llama-1"]
    system = {"role": "system", "content": "You are the system prompt every session shares."}
    sent: dict[str, list[str]] = {}
    with httpx.Client(base_url=fleet.url, headers=AUTH, timeout=60) as c:
        for session in range(8):
            key = f"user{session}-chat{session * 37}"
            history = [system]
            for turn in range(6):
                history.append({"role": "user", "content": f"turn {turn} of session {session}"})
                body = {"model": LLAMA, "max_tokens": 2, "messages": history}
                r = c.post("/v1/openai/chat/completions", json={**body, "prompt_cache_key": key})
                assert r.status_code == 200, r.text
                sent.setdefault(key, []).append(r.headers["x-request-id"])
                reply = r.json()["choices"][0]["message"]["content"] or "..."
                history.append({"role": "assistant", "content": reply})

    def served_by() -> dict[str, str]:
        return {
            line["request_id"]: name
            for name in names
            for line in json_log(fleet.run_dir / "logs" / f"{name}.log", '"message":"access"')
        }

    wanted = {rid for rids in sent.values() for rid in rids}
    eventually(lambda: wanted <= served_by().keys(), 10, "the replicas' access lines")
    where = served_by()
    placed = {key: {where[rid] for rid in rids} for key, rids in sent.items()}
    print(f"sessions by replica: {sorted(p for [p] in placed.values())}")
    assert all(len(replicas) == 1 for replicas in placed.values()), placed
    assert set().union(*placed.values()) == set(names)


def test_replicas_export_what_endpoint_pickers_read(fleet: RunningFleet) -> None:
    for url in fleet.replicas.values():
        text = httpx.get(f"{url}/metrics", timeout=10).text
        for name in (
            "vllm:num_requests_waiting",
            "vllm:num_requests_running",
            "vllm:kv_cache_usage_perc",
            "vllm:cache_config_info",
        ):
            assert f"\n{name}{{" in text, name


def test_the_front_door_has_its_own_probes_and_metrics(fleet: RunningFleet) -> None:
    assert httpx.get(f"{fleet.url}/health/live", timeout=10).json() == {"status": "alive"}
    assert httpx.get(f"{fleet.url}/health/ready", timeout=10).json() == {"status": "ready"}
    metrics = httpx.get(f"{fleet.url}/metrics", timeout=10).text
    # HAProxy's exporter: one up/down state per replica of each model's backend.
    assert (
        metrics.count('haproxy_server_status{proxy="model_deepinfra-serve-tiny-random-llama"') >= 2
    )


def _table(fleet: RunningFleet) -> str:
    """The front door's table of keys in flight, from its operators' socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(fleet.run_dir / "haproxy.sock"))
        s.sendall(b"show table key_limits\n")
        return b"".join(iter(lambda: s.recv(65536), b"")).decode()


def test_the_front_door_holds_a_key_to_its_limit_across_replicas(fleet: RunningFleet) -> None:
    limited = {"Authorization": f"Bearer {FLEET_LIMITED_KEY}"}
    digest = hashlib.sha256(FLEET_LIMITED_KEY.encode()).hexdigest()
    # Greedy: a sampled token could be the end of the text, and a held stream end early.
    long = {"model": LLAMA, "messages": HELLO, "max_tokens": 1000, "temperature": 0}

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=fleet.url, timeout=60) as ac:
            # Its requests spread over both replicas (each would take 2 more of them itself).
            held = [
                ac.stream(
                    "POST",
                    "/v1/openai/chat/completions",
                    json={**long, "stream": True, "prompt_cache_key": f"session-{i}"},
                    headers=limited,
                )
                for i in range(FLEET_KEY_LIMIT)
            ]
            assert [(await h.__aenter__()).status_code for h in held] == [200] * FLEET_KEY_LIMIT
            table = _table(fleet)
            third = await ac.post("/v1/openai/chat/completions", json=long, headers=limited)
            native = await ac.post(f"/v1/inference/{LLAMA}", json={"input": "Hi"}, headers=limited)
            other = await ac.post(
                "/v1/openai/chat/completions", json={**long, "max_tokens": 2}, headers=AUTH
            )
            for h in held:
                await h.__aexit__(None, None, None)
        # The front door answered: a replica's answers carry a request id.
        assert third.status_code == 429 and "x-request-id" not in third.headers
        assert third.headers["retry-after"] == "1"
        assert third.json()["error"]["code"] == "rate_limited"
        assert native.status_code == 429 and native.json() == {"error": "Rate limited"}
        assert other.status_code == 200
        # Only the key's digest is held, with its requests in flight.
        assert f"key={digest} " in table and f"conn_cur={FLEET_KEY_LIMIT}" in table
        assert FLEET_LIMITED_KEY not in table and FLEET_KEY not in table
        assert FLEET_LIMITED_KEY not in (fleet.run_dir / "haproxy.cfg").read_text()
        assert FLEET_LIMITED_KEY not in (fleet.run_dir / "key_limits.map").read_text()

    asyncio.run(scenario())
    eventually(lambda: f"key={digest} " not in _table(fleet) or "conn_cur=0" in _table(fleet), 10)
    again = httpx.post(
        f"{fleet.url}/v1/openai/chat/completions",
        json={**long, "max_tokens": 2},
        headers=limited,
        timeout=60,
    )
    assert again.status_code == 200


def test_a_model_named_at_its_version_reaches_its_replicas(fleet: RunningFleet) -> None:
    body = {"model": f"{LLAMA}:1", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    r = httpx.post(f"{fleet.url}/v1/openai/chat/completions", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["model"] == LLAMA
    native = httpx.post(
        f"{fleet.url}/v1/inference/{LLAMA}:1", json={"input": "Hi"}, headers=AUTH, timeout=60
    )
    assert native.status_code == 200


@pytest.mark.parametrize("tier", ["priority", "flex"])
def test_tiers_pass_the_front_door(fleet: RunningFleet, tier: str) -> None:
    body = {"model": LLAMA, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    r = httpx.post(
        f"{fleet.url}/v1/openai/chat/completions",
        json={**body, "service_tier": tier},
        headers=AUTH,
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["service_tier"] == tier


@pytest.mark.parametrize("model", [LLAMA, MISTRAL])
def test_gzip_bodies_reach_their_models_replicas(fleet: RunningFleet, model: str) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    headers = {**AUTH, "content-encoding": "gzip", "content-type": "application/json"}
    for _ in range(4):  # whichever replica the front door tries first
        r = httpx.post(
            f"{fleet.url}/v1/openai/chat/completions",
            content=gzip.compress(json.dumps(body).encode()),
            headers=headers,
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["model"] == model


@pytest.mark.parametrize("model", [LLAMA, MISTRAL])
def test_the_messages_api_through_the_front_door(fleet: RunningFleet, model: str) -> None:
    client = anthropic.Anthropic(base_url=f"{fleet.url}/anthropic", api_key=KEY, max_retries=0)
    message = client.messages.create(
        model=model, max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.model == model and message.usage.output_tokens <= 3
    with client.messages.stream(
        model=model, max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        assert stream.get_final_message().model == model
