"""Metrics, probes, request ids and access logs on the real server and engine."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..helpers import HELLO, MODEL, eventually, json_log, sse_lines

ROOT = Path(__file__).resolve().parents[2]


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


def test_readiness_and_health_are_503_while_loading_and_200_after(
    client: httpx.Client, startup_probes: list[tuple[int | None, int | None, int | None]]
) -> None:
    # HTTP answered while the engine was still loading: live 200, ready and health 503.
    assert (200, 503, 503) in startup_probes
    first_live = next(i for i, (live, _, _) in enumerate(startup_probes) if live == 200)
    # Until the last round, nothing said ready (a probe that timed out on a loaded machine
    # says None).
    assert all(200 not in (ready, health) for _, ready, health in startup_probes[first_live:-1])
    assert client.get("/health/ready").json() == {"status": "ready"}
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health").status_code == 200


def test_counters_move_by_exactly_the_traffic(client: httpx.Client) -> None:
    before = scrape(client)
    usages = []
    for _ in range(3):
        r = client.post(
            "/v1/openai/chat/completions",
            json={"model": MODEL, "messages": HELLO, "max_tokens": 5},
        )
        usages.append(r.json()["usage"])
    for _ in range(2):
        with client.stream(
            "POST",
            "/v1/openai/chat/completions",
            json={"model": MODEL, "messages": HELLO, "max_tokens": 4, "stream": True},
        ) as r:
            events = [line[6:] for line in sse_lines(r) if line.startswith("data: {")]
        usages.append(json.loads(events[-1])["usage"])
    bad = client.post(
        "/v1/openai/chat/completions", json={"model": MODEL, "messages": HELLO, "n": 9}
    )
    assert bad.status_code == 422
    native = client.post(f"/v1/inference/{MODEL}", json={"input": "Hi", "max_new_tokens": 3}).json()

    def moved(name: str, **labels: str) -> float:
        return total(scrape(client), name, **labels) - total(before, name, **labels)

    eventually(lambda: moved("deepinfra_requests_total", api="chat") == 6)
    assert moved("deepinfra_requests_total", api="chat", status="200") == 5
    assert moved("deepinfra_requests_total", api="chat", status="422", finish_reason="none") == 1
    assert moved("deepinfra_requests_total", api="inference", status="200") == 1
    prompt = sum(u["prompt_tokens"] for u in usages)
    generated = sum(u["completion_tokens"] for u in usages)
    assert moved("deepinfra_prompt_tokens_total", api="chat") == prompt
    assert moved("deepinfra_generation_tokens_total", api="chat") == generated
    assert moved("deepinfra_generation_tokens_total", api="inference") == native["num_tokens"]
    cost = sum(u["estimated_cost"] for u in usages)
    assert moved("deepinfra_estimated_cost_usd_total", api="chat") == pytest.approx(cost)
    assert moved("deepinfra_e2e_request_latency_seconds_count", api="chat") == 6
    assert moved("deepinfra_time_to_first_token_seconds_count", api="chat") == 2
    assert moved("deepinfra_inter_token_latency_seconds_count", api="chat") == 2
    now = scrape(client)
    assert total(now, "deepinfra_requests_in_flight") == 0
    assert total(now, "deepinfra_engine_ready", model=MODEL) == 1


def test_vllm_engine_metrics_are_exported(client: httpx.Client) -> None:
    samples = scrape(client)
    names = {name for name, _ in samples}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:request_queue_time_seconds_count",
        "vllm:generation_tokens_total",
    ):
        assert name in names
    assert total(samples, "vllm:generation_tokens_total") > 0


def test_request_id_is_taken_from_the_client_and_reaches_logs_and_engine(
    client: httpx.Client, server_log: Path
) -> None:
    rid = "trace-7f3a9c01"
    r = client.post(
        "/v1/openai/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 2},
        headers={"X-Request-ID": rid},
    )
    assert r.headers["x-request-id"] == rid
    assert r.json()["id"] == f"chatcmpl-{rid}"
    native = client.post(
        f"/v1/inference/{MODEL}",
        json={"input": "Hi", "max_new_tokens": 2},
        headers={"X-Request-ID": "native-1"},
    )
    assert native.json()["request_id"] == "native-1"
    # Streams, and errors of the generation routes, carry it too.
    with client.stream(
        "POST",
        "/v1/openai/completions",
        json={"model": MODEL, "prompt": "Hi", "max_tokens": 2, "stream": True},
        headers={"X-Request-ID": "stream-1"},
    ) as stream:
        assert stream.headers["x-request-id"] == "stream-1"
    bad = client.post(
        f"/v1/inference/{MODEL}", json={"input": 1}, headers={"X-Request-ID": "bad-1"}
    )
    assert bad.status_code == 422 and bad.headers["x-request-id"] == "bad-1"

    def logged() -> bool:
        text = server_log.read_text(errors="replace")
        return f"Added request chatcmpl-{rid}" in text and f'"request_id":"{rid}"' in text

    eventually(logged)


def test_request_ids_are_generated_when_absent_or_unusable(client: httpx.Client) -> None:
    for headers in ({}, {"X-Request-ID": "spaces are not allowed"}, {"X-Request-ID": "x" * 200}):
        r = client.get("/health", headers=headers)
        assert re.fullmatch("[A-Za-z0-9]{24}", r.headers["x-request-id"])
    a = client.get("/health").headers["x-request-id"]
    assert a != client.get("/health").headers["x-request-id"]


def test_one_json_access_line_per_request_without_content(
    client: httpx.Client, server_log: Path
) -> None:
    secret = "zebra-quartz-prompt-marker"
    r = client.post(
        "/v1/openai/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": secret}], "max_tokens": 3},
        headers={"X-Request-ID": "access-line-1", "x-deepinfra-source": "claude-code/2.1"},
    )
    unusable = client.post(
        "/v1/openai/chat/completions",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 1},
        headers={"X-Request-ID": "access-line-2", "x-deepinfra-source": 'a b"c' + "x" * 80},
    )
    assert unusable.status_code == 200
    usage = r.json()["usage"]
    output = r.json()["choices"][0]["message"]["content"]

    def lines(rid: str = "access-line-1") -> list[dict[str, Any]]:
        entries = json_log(server_log, f'"{rid}"')
        return [e for e in entries if e.get("logger") == "deepinfra_serve.access"]

    eventually(lambda: len(lines()) == 1 and len(lines("access-line-2")) == 1)
    [entry] = lines()
    assert entry["model"] == MODEL and entry["api"] == "chat" and entry["status"] == 200
    assert entry["prompt_tokens"] == usage["prompt_tokens"]
    assert entry["completion_tokens"] == usage["completion_tokens"]
    assert entry["estimated_cost"] == pytest.approx(usage["estimated_cost"])
    assert entry["latency_ms"] > 0 and entry["finish_reason"] in ("stop", "length")
    assert "content" not in entry
    # The agent's attribution, when it is a short plain token; the tier served and billed.
    assert entry["source"] == "claude-code/2.1" and entry["service_tier"] == "default"
    [other] = lines("access-line-2")
    assert other["source"] is None  # spaces, a quote, past 64 characters: not kept
    log_text = server_log.read_text(errors="replace")
    assert secret not in log_text
    if len(output) >= 8:
        assert output not in log_text


def test_grafana_dashboard_uses_only_exported_metrics(client: httpx.Client) -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "deepinfra-serve.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    # The adapter series exist once an adapter has served a request.
    adapter = {"model": "deepinfra-serve/tiny-random-llama-pirate", "prompt": "Hi", "max_tokens": 1}
    assert client.post("/v1/openai/completions", json=adapter).status_code == 200
    assert len(exprs) >= 10
    exported = {name for name, _ in scrape(client)}
    used = {m for e in exprs for m in re.findall(r"(?:deepinfra_|vllm:)[a-z0-9_:]+", e)}
    assert used and used <= exported, used - exported
