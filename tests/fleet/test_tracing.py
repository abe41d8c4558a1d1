"""Traces through the fleet's front door: the trace a client started goes on in whichever
replica serves its request, and a request that brings none is given one by the front door,
which the replica's spans and its access line carry."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx

from ..collector import Collector, Span
from ..helpers import FLEET_KEY, MISTRAL, MODEL, RunningFleet, eventually, json_log

SERVER = 2  # OTLP's span kind


def _server_span(collector: Collector, request_id: str) -> Span:
    def pick(s: Span) -> bool:
        return s.kind == SERVER and s.attributes.get("deepinfra.request_id") == request_id

    [span] = collector.wait_for(lambda s: len(s) >= 1, pick)
    return span


def _access_line(fleet: RunningFleet, request_id: str) -> dict[str, Any]:
    """The request's access line, in whichever replica's log it is (written as its last byte
    goes, which may be after its client and its spans have it)."""

    def lines() -> list[dict[str, Any]]:
        return [
            line
            for name in fleet.replicas
            for line in json_log(fleet.run_dir / "logs" / f"{name}.log", request_id)
            if line.get("request_id") == request_id
        ]

    eventually(lambda: lines(), 10, f"the access line of {request_id}")
    [line] = lines()
    return line


def test_the_clients_trace_goes_on_in_whichever_replica_serves_it(
    fleet: RunningFleet, fleet_collector: tuple[str, Collector]
) -> None:
    _, collector = fleet_collector
    headers = {"Authorization": f"Bearer {FLEET_KEY}"}
    sent: dict[str, tuple[str, str]] = {}  # request id -> (trace id, client's span id)
    with httpx.Client(base_url=fleet.url, headers=headers, timeout=60) as client:
        for i, model in enumerate([MODEL] * 6 + [MISTRAL]):
            digest = hashlib.sha256(f"fleet trace {i}".encode()).hexdigest()
            trace_id, span_id = digest[:32], digest[32:48]
            answer = client.post(
                "/v1/openai/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": f"Hi {i}"}],
                      "max_tokens": 2},
                headers={"traceparent": f"00-{trace_id}-{span_id}-01"},
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
            sent[answer.headers["x-request-id"]] = (trace_id, span_id)
        # No traceparent: the front door starts the trace.
        bare = client.post(
            "/v1/openai/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        )
        assert bare.status_code == 200, bare.text

    instances = set()
    for request_id, (trace_id, span_id) in sent.items():
        span = _server_span(collector, request_id)
        assert (span.trace_id, span.parent_id) == (trace_id, span_id)
        assert span.resource["service.name"] == "fleet"
        assert _access_line(fleet, request_id)["trace_id"] == trace_id
        instances.add(span.resource["service.instance.id"])
    assert len(instances) >= 2  # the llama replicas and the mistral one

    request_id = bare.headers["x-request-id"]
    span = _server_span(collector, request_id)
    assert span.parent_id != "" and len(span.trace_id) == 32  # the front door's span id
    assert _access_line(fleet, request_id)["trace_id"] == span.trace_id


def test_the_engines_own_processes_export_to_the_same_collector(
    fleet: RunningFleet, fleet_collector: tuple[str, Collector]
) -> None:
    """The engine core and its workers read only vLLM's traces endpoint and protocol: the
    server passes both on, so their start-up spans arrive, over the fleet's protocol."""
    _, collector = fleet_collector
    names = {s.name for s in collector.where(lambda s: s.resource.get("service.name") == "fleet")}
    assert {"EngineCoreProc init", "Load weights"} <= names
    for name in fleet.replicas:
        log = (fleet.run_dir / "logs" / f"{name}.log").read_text()
        assert "Failed to export" not in log, name
