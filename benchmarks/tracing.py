"""What tracing costs: this service with every request traced (OpenTelemetry's settings, every
request sampled, spans exported over OTLP/gRPC to a receiver in this process that counts and
drops them) against tracing off, the same card, engine arguments and workload, in interleaved
rounds (`ab.interleaved`). Paired ratios (on / off) of API-process CPU per 1,000 tokens,
throughput and TTFT p50; the goal: within 10 %. (Tracing off against the code before it is
`benchmarks.ab --before REV`.)

Then what one request's spans cost on their own, which a shared machine's rounds cannot
resolve to a few percent: the server, admission and generation spans as the server makes them,
vLLM's `llm_request` as it makes it, and their OTLP encoding, against the API CPU per request
measured above.

    python -m benchmarks.tracing --concurrency 32,128 --rounds 5
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from deepinfra_serve.config.cards import ModelCard
from deepinfra_serve.config.pricing import Usage
from deepinfra_serve.http.families import served_as
from deepinfra_serve.http.routes import TABLE
from deepinfra_serve.observability.record import RequestRecord
from deepinfra_serve.observability.spans import Tracing
from deepinfra_serve.observability.tracing import TracingSettings

from .ab import interleaved, setup, start_arms, write_report
from .servers import bench_parser


class _Sink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC receiver that counts the spans it is sent and keeps none."""

    def __init__(self) -> None:
        self.spans = 0
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:  # gRPC's name
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self.lock:
            self.spans += n
        return trace_service_pb2.ExportTraceServiceResponse()


@contextlib.contextmanager
def sink() -> Iterator[tuple[str, _Sink]]:
    counted = _Sink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(counted, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", counted
    finally:
        server.stop(grace=None)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__ or "", "32,128", rounds=5)
    args = parser.parse_args(argv)
    s = setup(args)
    card = s.card
    env = {k: v for k, v in s.env.items() if not k.startswith("OTEL_")}
    with sink() as (endpoint, counted), contextlib.ExitStack() as stack:
        traced = {
            **env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_TRACES_SAMPLER": "always_on",
        }
        arms = {"off": (18351, env), "on": (18352, traced)}
        front = start_arms(stack, arms, s.card_file, args, "tracing")
        ports = {name: port for name, (port, _) in arms.items()}
        rows = interleaved(ports, front, card.name, s.levels, args, "tracing")
        requests = sum(r.requests for r in rows if r.server == "on")
    per_request_us = statistics.median(
        r.api_cpu_ms_per_1k_tokens * args.max_tokens for r in rows if r.server == "on"
    )  # ms per 1k tokens x tokens per request = us per request
    spans_us = span_cost(card, args.max_tokens)
    intro = (
        f"Tracing on (every request sampled, exported over OTLP/gRPC) against off; spans the "
        f"`on` arm exported: {counted.spans} for {requests} measured requests and the warm-up. "
        f"One request's four spans on their own, built and encoded: {spans_us:.1f} us of CPU, "
        f"against {per_request_us:.0f} us of API CPU per request: "
        f"{spans_us / per_request_us:.2%}."
    )
    write_report(args, "tracing", rows, ("off", "on"), intro)
    return 0


def span_cost(card: ModelCard, max_tokens: int, n: int = 5000) -> float:
    """us of CPU for one request's spans: made as the server and vLLM make them, then encoded
    as OTLP would send them (by the batch processor's thread, flushed every 400 requests so
    that none is dropped; `process_time` counts every thread)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from vllm.tracing import extract_trace_context

    class Encoding(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            encode_spans(spans).SerializeToString()
            return SpanExportResult.SUCCESS

    route = TABLE.classify("POST", "/v1/openai/chat/completions")
    assert route is not None
    tracing = Tracing(TracingSettings("grpc", "unused"), card.name, "0", "bench", Encoding())
    usage = Usage.of(card.pricing, 20, max_tokens)
    headers = [(b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    # vLLM's `llm_request` attributes (`OutputProcessor.do_tracing`): 14 numbers.
    engine_attributes = {f"gen_ai.latency.a{k}": 0.1 for k in range(14)}
    start = time.process_time()
    for i in range(n):
        record = RequestRecord(request_id=f"r{i}", model=card.name, route=route)
        record.served = served_as(card, card.name, route.family)
        record.trace = trace = tracing.server(record, headers)
        with trace.admission():
            pass
        span, engine_headers = trace.generation(record)
        engine = tracing.tracer.start_span(
            "llm_request", context=extract_trace_context(engine_headers)
        )
        engine.set_attributes(engine_attributes)
        engine.end()
        span.end()
        record.status = 200
        record.finish_reason = "length"
        trace.end(record, usage, 0.02)
        if i % 400 == 399:
            tracing.provider.force_flush()
    tracing.shutdown()
    return (time.process_time() - start) / n * 1e6


if __name__ == "__main__":
    sys.exit(main())
