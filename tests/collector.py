"""The tests' stand-in for an OpenTelemetry Collector (none is packaged here): an OTLP trace
receiver over gRPC or HTTP/protobuf, built on `opentelemetry-proto`'s service definitions, on
loopback. It keeps every span it is sent, flattened for assertions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from .helpers import free_port


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    return None if kind is None else getattr(v, kind)


@dataclass(frozen=True)
class Span:
    """One exported span, its ids as lowercase hex, its times in nanoseconds."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    kind: int  # OTLP's SpanKind: 2 server, 5 consumer, 1 internal
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: dict[str, int]  # name -> time
    links: tuple[tuple[str, str], ...]  # (trace id, span id)
    status: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


class Collector:
    """Every span received, in arrival order."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.requests = 0
        self._lock = threading.Lock()

    def take(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received = []
        for rs in request.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    received.append(
                        Span(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            events={e.name: e.time_unix_nano for e in s.events},
                            links=tuple((lk.trace_id.hex(), lk.span_id.hex()) for lk in s.links),
                            status=s.status.code,
                            resource=resource,
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(received)

    def where(self, test: Callable[[Span], bool]) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if test(s)]

    def wait_for(
        self,
        test: Callable[[list[Span]], bool],
        pick: Callable[[Span], bool],
        timeout_s: float = 20,
    ) -> list[Span]:
        """The spans `pick` selects, once `test` holds for them (or fails after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.where(pick)
            if test(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.1)

    def trace(self, trace_id: str) -> list[Span]:
        return self.where(lambda s: s.trace_id == trace_id)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def Export(self, request: Any, context: Any) -> Any:  # gRPC's name
        self.collector.take(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def grpc_collector() -> Iterator[tuple[str, Collector]]:
    """(endpoint, collector) of an OTLP/gRPC receiver on 127.0.0.1, stopped on exit."""
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(collector), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", collector
    finally:
        server.stop(grace=None)


@contextmanager
def http_collector() -> Iterator[tuple[str, Collector]]:
    """(base endpoint, collector) of an OTLP/HTTP receiver on 127.0.0.1 (`/v1/traces`)."""
    collector = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            collector.take(request)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", collector
    finally:
        server.shutdown()
        server.server_close()
