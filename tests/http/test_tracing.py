"""OpenTelemetry traces on the real engine: the guarded server exports over OTLP/gRPC to the
tests' stand-in for a collector (`tests/collector.py`). A streamed chat sent with a
`traceparent` is one trace: the server span under the client's, its admission and generation
children, and vLLM's own span under the generation, with the usage the client was billed; a
flex request's wait is its admission span; a webhook job and a batch line are traces of their
own linked to the request that created them; the session's server, not traced, adds nothing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai

from ..collector import Collector, Span
from ..helpers import (
    CHAT,
    GUARDED_AUTH,
    GUARDED_FLEX_WAIT_S,
    GUARDED_LIMIT,
    HELLO,
    INFERENCE,
    MODEL,
    batch_line,
    eventually,
    json_log,
    jsonl,
    metric_sum,
    receiving,
    upload_batch,
    wait_batch,
)

KEY = "secret-inline-1"  # GUARDED_AUTH's
SERVER, CONSUMER = 2, 5  # OTLP's span kinds
ERROR = 2  # OTLP's status code


def _traceparent(n: int) -> tuple[str, str, str]:
    """(traceparent, trace id, parent span id) of a client's span, distinct for each `n`."""
    trace_id = hashlib.sha256(f"trace {n} {os.getpid()}".encode()).hexdigest()[:32]
    span_id = hashlib.sha256(f"span {n}".encode()).hexdigest()[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _one(spans: list[Span], name: str) -> Span:
    [span] = [s for s in spans if s.name == name]
    return span


def _trace(collector: Collector, trace_id: str, count: int) -> list[Span]:
    spans = collector.wait_for(lambda s: len(s) >= count, lambda s: s.trace_id == trace_id)
    assert len(spans) == count, [s.name for s in spans]
    return spans


def _access_line(log: Path, request_id: str) -> dict[str, Any]:
    """The request's access line, written once its last byte has gone (after the client has
    it)."""

    def lines() -> list[dict[str, Any]]:
        return [x for x in json_log(log, request_id) if x.get("request_id") == request_id]

    eventually(lambda: lines(), 10, f"the access line of {request_id}")
    [line] = lines()
    return line


def _root_spans(collector: Collector, request_id: str, count: int = 1) -> list[Span]:
    """The top spans of work no client waits on, by its request id."""

    def pick(s: Span) -> bool:
        return s.parent_id == "" and s.attributes.get("deepinfra.request_id") == request_id

    spans = collector.wait_for(lambda s: len(s) >= count, pick)
    assert len(spans) == count
    return spans


def test_a_streamed_chat_is_one_trace_from_the_client_to_the_engine(
    guarded: tuple[str, Path], guarded_collector: tuple[str, Collector]
) -> None:
    url, log = guarded
    _, collector = guarded_collector
    traceparent, trace_id, client_span = _traceparent(1)
    secret = "a prompt only its sender may read 7f3a"
    with openai.OpenAI(base_url=f"{url}/v1/openai", api_key=KEY, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": secret}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"traceparent": traceparent},
        )
        chunks = list(raw.parse())
    request_id = raw.headers["x-request-id"]
    usage = chunks[-1].usage
    assert usage is not None and usage.model_extra is not None
    assert usage.prompt_tokens_details is not None
    cost = usage.model_extra["estimated_cost"]
    [finish_reason] = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]

    spans = _trace(collector, trace_id, 4)
    server = _one(spans, "POST /v1/openai/chat/completions")
    admission = _one(spans, "admission")
    generation = _one(spans, f"chat {MODEL}")
    engine = _one(spans, "llm_request")  # vLLM's own

    # The server span continues the client's trace, and says what the request was and cost.
    assert (server.kind, server.parent_id) == (SERVER, client_span)
    assert server.resource["service.name"] == "guarded"
    assert (
        server.attributes
        | {
            "http.route": "/v1/openai/chat/completions",
            "http.response.status_code": 200,
            "deepinfra.request_id": request_id,
            "deepinfra.service_tier": "default",
            "deepinfra.key_digest": hashlib.sha256(KEY.encode()).hexdigest(),
            "gen_ai.request.model": MODEL,
            "gen_ai.usage.input_tokens": usage.prompt_tokens,
            "gen_ai.usage.output_tokens": usage.completion_tokens,
            "gen_ai.usage.cache_read.input_tokens": usage.prompt_tokens_details.cached_tokens,
            "deepinfra.estimated_cost": cost,
            "gen_ai.response.finish_reasons": (finish_reason,),
        }
        == server.attributes
    )
    # Its first token and last byte, in order, inside it; its TTFT is the access line's.
    line = _access_line(log, request_id)
    assert line["trace_id"] == trace_id
    ttft = server.attributes["gen_ai.latency.time_to_first_token"]
    assert round(ttft * 1000, 1) == line["ttft_ms"]
    first, last = server.events["first_token"], server.events["last_byte"]
    assert server.start_ns < first < last <= server.end_ns
    assert abs(first - server.start_ns - ttft * 1e9) < 1e6

    # Admission and generation under it; vLLM's span under the generation, from the same
    # numbers the client was billed.
    assert admission.parent_id == generation.parent_id == server.span_id
    assert admission.attributes["deepinfra.admission.wait_s"] < 0.5
    assert admission.end_ns <= generation.start_ns
    assert generation.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "deepinfra",
        "gen_ai.request.model": MODEL,
    }
    assert engine.parent_id == generation.span_id
    assert engine.attributes["gen_ai.request.id"] == f"chatcmpl-{request_id}"
    assert engine.attributes["gen_ai.usage.prompt_tokens"] == usage.prompt_tokens
    assert engine.attributes["gen_ai.usage.completion_tokens"] == usage.completion_tokens
    assert 0 < engine.attributes["gen_ai.latency.time_to_first_token"] <= ttft
    assert "gen_ai.latency.time_in_queue" in engine.attributes
    # The server does not log content: no span holds the prompt.
    assert not [s for s in spans if secret in repr(s.attributes)]


def test_a_flex_request_that_waited_shows_its_wait(
    guarded: tuple[str, Path], guarded_collector: tuple[str, Collector]
) -> None:
    url, _ = guarded
    _, collector = guarded_collector
    long = {"model": MODEL, "messages": HELLO, "max_tokens": 1000, "temperature": 0}
    flex = {"model": MODEL, "messages": HELLO, "max_tokens": 2, "service_tier": "flex"}
    refused, refused_id, _ = _traceparent(2)
    served, served_id, _ = _traceparent(3)

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60, headers=GUARDED_AUTH) as ac:
            # The model's whole limit taken by default requests: flex waits for room.
            held = [asyncio.ensure_future(ac.post(CHAT, json=long)) for _ in range(GUARDED_LIMIT)]
            try:
                while (
                    metric_sum(
                        (await ac.get("/metrics")).text, "deepinfra_requests_in_flight", api="chat"
                    )
                    < GUARDED_LIMIT
                ):
                    await asyncio.sleep(0.02)
                # One waits its whole bound and is refused; one is admitted once room is made.
                late = await ac.post(CHAT, json=flex, headers={"traceparent": refused})
                waiting = asyncio.ensure_future(
                    ac.post(CHAT, json=flex, headers={"traceparent": served})
                )
                await asyncio.sleep(0.4)
            finally:
                for task in held:
                    task.cancel()
            return late, await asyncio.wait_for(waiting, 30)

    late, done = asyncio.run(scenario())
    assert (late.status_code, done.status_code) == (429, 200)

    spans = _trace(collector, refused_id, 2)
    wait = _one(spans, "admission")
    assert wait.status == ERROR and wait.attributes["http.response.status_code"] == 429
    assert wait.attributes["deepinfra.admission.wait_s"] >= GUARDED_FLEX_WAIT_S * 0.95
    assert wait.seconds >= GUARDED_FLEX_WAIT_S * 0.95
    server = _one(spans, "POST /v1/openai/chat/completions")
    assert server.attributes["http.response.status_code"] == 429
    assert server.attributes["deepinfra.service_tier"] == "flex"

    spans = _trace(collector, served_id, 4)
    wait = _one(spans, "admission")
    assert wait.status != ERROR and 0.35 <= wait.attributes["deepinfra.admission.wait_s"] < 30
    assert _one(spans, f"chat {MODEL}").start_ns >= wait.end_ns


def test_work_no_client_waits_on_is_a_trace_of_its_own_linked_to_its_origin(
    guarded: tuple[str, Path], guarded_collector: tuple[str, Collector]
) -> None:
    url, _ = guarded
    _, collector = guarded_collector
    hooked, hooked_trace, _ = _traceparent(4)
    created, created_trace, _ = _traceparent(5)

    # A webhook job: answered `queued`, then generated and delivered with no client waiting.
    with receiving() as receiver, httpx.Client(base_url=url, headers=GUARDED_AUTH) as http:
        queued = http.post(
            INFERENCE,
            json={"input": "Hello", "max_new_tokens": 3, "webhook": receiver.url},
            headers={"traceparent": hooked},
            timeout=60,
        ).json()
        request_id = queued["request_id"]
        receiver.wait_for(lambda: any(b["request_id"] == request_id for b in receiver.bodies))
        [delivered] = [b for b in receiver.bodies if b["request_id"] == request_id]
    origin = _one(_trace(collector, hooked_trace, 2), "POST /v1/inference/{model:path}")
    assert origin.attributes["http.response.status_code"] == 200
    [job] = _root_spans(collector, request_id)
    assert job.kind == CONSUMER and job.trace_id != hooked_trace
    assert job.links == ((hooked_trace, origin.span_id),)
    assert job.attributes["deepinfra.via"] == "background"
    status = delivered["inference_status"]
    assert job.attributes["gen_ai.usage.input_tokens"] == status["tokens_input"]
    assert job.attributes["gen_ai.usage.output_tokens"] == status["tokens_generated"]
    assert job.attributes["deepinfra.estimated_cost"] == status["cost"]
    under = _trace(collector, job.trace_id, 3)
    assert {s.name for s in under} == {job.name, f"text_completion {MODEL}", "llm_request"}

    # A batch's lines: each a trace of its own, linked to the request that created the batch.
    with openai.OpenAI(base_url=f"{url}/v1/openai", api_key=KEY, max_retries=0) as client:
        lines = [
            batch_line(f"t{i}", "/v1/completions", model=MODEL, prompt=f"line {i}", max_tokens=2)
            for i in range(2)
        ]
        batch = upload_batch(
            client, lines, "/v1/completions", extra_headers={"traceparent": created}
        )
        done = wait_batch(client, batch.id)
        assert done.status == "completed" and done.output_file_id is not None
        results = jsonl(client.files.content(done.output_file_id).text)
    creation = _one(_trace(collector, created_trace, 1), "POST /v1/openai/batches")
    for result in results:
        [line] = _root_spans(collector, result["response"]["request_id"])
        assert line.kind == CONSUMER and line.trace_id != created_trace
        assert line.links == ((created_trace, creation.span_id),)
        assert line.attributes["deepinfra.via"] == "batch"
        assert line.attributes["deepinfra.batch_id"] == batch.id
        assert line.attributes["deepinfra.custom_id"] == result["custom_id"]
        assert line.attributes["deepinfra.service_tier"] == "batch"
        usage = result["response"]["body"]["usage"]
        assert line.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
        assert line.attributes["deepinfra.estimated_cost"] == usage["estimated_cost"]


def test_a_server_not_traced_exports_nothing_and_loads_no_tracing(
    base_url: str, server_log: Path, guarded_collector: tuple[str, Collector]
) -> None:
    """The session's server has no OTEL_* settings: a request with a `traceparent` gets no
    trace id in its access line, and importing the server does not import the span code."""
    _, collector = guarded_collector
    traceparent, trace_id, _ = _traceparent(6)
    answer = httpx.post(
        f"{base_url}{CHAT}",
        json={"model": MODEL, "messages": HELLO, "max_tokens": 2},
        headers={"traceparent": traceparent},
        timeout=60,
    )
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    line = _access_line(server_log, request_id)
    assert "trace_id" not in line and line["completion_tokens"] == 2
    assert not collector.trace(trace_id)
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, deepinfra_serve.http.app, deepinfra_serve.cli; "
            "print('deepinfra_serve.observability.spans' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "False"
