"""A request's OpenTelemetry trace: imported only when tracing is on (`tracing`).

One trace per request, continuing the client's `traceparent`: a server span for the request
(its route, status, model, tier, key digest, request id, usage and cost, with events for its
first token and its last byte), a child for its admission (a flex request's wait is its
length) and one for its generation, under which vLLM's own `llm_request` span sits (the
engine is handed the generation span's `traceparent`). Work no client waits on (a webhook job,
a batch line) is a trace of its own, linked to the request that created it.

Attributes follow the OpenTelemetry GenAI and HTTP conventions (`gen_ai.*`, `http.*`) and
name this service's own facts `deepinfra.*`. Prompts and outputs go into a span only when the
server logs content (`LOG_CONTENT`).

This process's provider is OpenTelemetry's global one, set before the engine starts, so that
vLLM's spans (which it makes through the global tracer) share its exporter and resource.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .tracing import TracingSettings

if TYPE_CHECKING:
    from ..config.pricing import Usage
    from .record import RequestRecord

log = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_SERVICE = "deepinfra-serve"
# What each API's generation is, in the GenAI conventions' `gen_ai.operation.name`.
_OPERATIONS = {"chat": "chat", "messages": "chat", "completions": "text_completion"}


class _QuietOverride(logging.Filter):
    """vLLM sets a provider of its own when its engine starts; this process's is set first,
    and OpenTelemetry's warning that it keeps it is expected, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Overriding of current TracerProvider" not in record.getMessage()


class Tracing:
    """This process's tracer: its provider, exporter and resource, and the spans of requests."""

    def __init__(
        self,
        settings: TracingSettings,
        model: str,
        instance: str,
        version: str,
        exporter: SpanExporter | None = None,
    ) -> None:
        """`exporter`: OTLP's for the settings' protocol, unless given (a benchmark's)."""
        self.settings = settings
        resource = _resource(model, instance, version)
        # The engine's processes, started after this, export their own start-up spans (the
        # model's loading) under the same service name.
        os.environ.setdefault("OTEL_SERVICE_NAME", str(resource.attributes["service.name"]))
        self.provider = TracerProvider(resource=resource)
        exporter = exporter or _exporter(settings.protocol)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(self.provider)
        logging.getLogger("opentelemetry.trace").addFilter(_QuietOverride())
        self.tracer = self.provider.get_tracer("deepinfra_serve")
        log.info("tracing: spans go to %s over %s", settings.traces_endpoint, settings.protocol)

    def server(self, record: RequestRecord, headers: Iterable[tuple[bytes, bytes]]) -> RequestTrace:
        """The server span of an HTTP request, under the client's `traceparent` if it sent one."""
        carrier = {}
        for name, value in headers:
            if name == b"traceparent" or name == b"tracestate":
                carrier[name.decode()] = value.decode("latin-1")
        parent = _PROPAGATOR.extract(carrier) if carrier else Context()  # none: a new trace
        return self._top(record, parent, SpanKind.SERVER)

    def work(self, record: RequestRecord, origin: Span | str | None) -> RequestTrace:
        """The root span of work no client waits on (`record.via`: a webhook job, a batch
        line), linked to where it came from: the span of the request that created it, or its
        `traceparent` as the store kept it."""
        origin_context: SpanContext | None = None
        if isinstance(origin, str):
            extracted = _PROPAGATOR.extract({"traceparent": origin})
            origin_context = trace.get_current_span(extracted).get_span_context()
        elif origin is not None:
            origin_context = origin.get_span_context()
        links = []
        if origin_context is not None and origin_context.is_valid:
            links.append(Link(origin_context))
        attributes = {"deepinfra.via": record.via}
        # A trace of its own, as a batch of many lines would otherwise be one.
        return self._top(record, Context(), SpanKind.CONSUMER, links, attributes)

    def _top(
        self,
        record: RequestRecord,
        context: Context,
        kind: SpanKind,
        links: list[Link] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> RequestTrace:
        """A request's top span, named by its method and route."""
        route = _template(record)
        span = self.tracer.start_span(
            f"{record.method} {route}",
            context=context,
            kind=kind,
            links=links,
            attributes={
                "http.request.method": record.method,
                "http.route": route,
                "url.path": record.path,
                "deepinfra.request_id": record.request_id,
                **(attributes or {}),
            },
        )
        return RequestTrace(self, span)

    def shutdown(self) -> None:
        """Export what is left (the batch processor's queue) and stop."""
        self.provider.shutdown()


class RequestTrace:
    """One request's trace: its top span and the children started under it."""

    __slots__ = ("_context", "_epoch_ns", "span", "tracing")

    def __init__(self, tracing: Tracing, span: Span) -> None:
        self.tracing = tracing
        self.span = span
        self._context = trace.set_span_in_context(span)
        # perf_counter() -> nanoseconds since the epoch, for events at times the record kept.
        self._epoch_ns = time.time_ns() - round(time.perf_counter() * 1e9)

    @property
    def recording(self) -> bool:
        """False when the sampler left this request out: nothing more is worth doing."""
        return self.span.is_recording()

    @property
    def trace_id(self) -> str | None:
        """The trace id, for the access line; None when the request is not sampled."""
        ctx = self.span.get_span_context()
        return format(ctx.trace_id, "032x") if ctx.is_valid and ctx.trace_flags.sampled else None

    def traceparent(self) -> str | None:
        """This request's span as a W3C `traceparent`, for what outlives it (a batch, a
        webhook job) to link to."""
        return _traceparent(self.span.get_span_context())

    def child(self, name: str, attributes: dict[str, Any] | None = None) -> Span:
        return self.tracing.tracer.start_span(name, context=self._context, attributes=attributes)

    @contextmanager
    def admission(self) -> Iterator[Span]:
        """The request's wait for its place: its length is the wait; a refusal is its error."""
        started = time.perf_counter()
        span = self.child("admission")
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            status = getattr(exc, "status", None)
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            raise
        finally:
            span.set_attribute("deepinfra.admission.wait_s", time.perf_counter() - started)
            span.end()

    def generation(self, record: RequestRecord) -> tuple[Span, dict[str, str]]:
        """The generation's span, and the `trace_headers` that put the engine's spans under
        it. The engine's span holds the sampling parameters and its own timings, the server
        span the usage and cost: each attribute once, as each costs the request's process
        its encoding."""
        served = record.serves
        operation = _OPERATIONS.get(record.route.label, "text_completion")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": "deepinfra",
            "gen_ai.request.model": served.name,
        }
        if served.adapter is not None:
            attributes["deepinfra.adapter"] = served.adapter.name
        span = self.child(f"{operation} {served.name}", attributes)
        headers: dict[str, str] = {}
        parent = _traceparent(span.get_span_context())
        if parent is not None:
            headers["traceparent"] = parent
            state = span.get_span_context().trace_state
            if state:
                headers["tracestate"] = state.to_header()
        return span, headers

    def end(self, record: RequestRecord, usage: Usage, ttft: float | None) -> None:
        """The server span's last attributes and its end, once the request's last byte is
        sent (or its work has ended)."""
        span = self.span
        if span.is_recording():
            now = time.time_ns()
            status = record.status
            attributes: dict[str, Any] = {
                "http.response.status_code": status,
                "deepinfra.service_tier": record.tier.name,
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "gen_ai.usage.cache_read.input_tokens": usage.cached_tokens,
                "deepinfra.estimated_cost": usage.estimated_cost,
            }
            served = record.served
            if served is not None:
                attributes["gen_ai.request.model"] = served.name
                if served.adapter is not None:
                    attributes["deepinfra.adapter"] = served.adapter.name
            owner = record.owner if record.tenant is None else record.tenant.owner
            if owner:
                attributes["deepinfra.key_digest"] = owner
            if record.finish_reason is not None:
                attributes["gen_ai.response.finish_reasons"] = (record.finish_reason,)
            if record.batch is not None:
                attributes["deepinfra.batch_id"], attributes["deepinfra.custom_id"] = record.batch
            if ttft is not None:
                attributes["gen_ai.latency.time_to_first_token"] = ttft
                first = self._epoch_ns + round((record.started + ttft) * 1e9)
                span.add_event("first_token", timestamp=first)
            if record.content is not None:
                attributes["deepinfra.content"] = orjson.dumps(record.content).decode()
            span.set_attributes(attributes)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
                span.set_attribute("error.type", str(status))
            span.add_event("last_byte", timestamp=now)
            span.end(end_time=now)
        else:
            span.end()


def _template(record: RequestRecord) -> str:
    """The route's path template under its family's first mount (`http.route`)."""
    return str(record.route.paths[0][0])


def _traceparent(ctx: SpanContext) -> str | None:
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _resource(model: str, instance: str, version: str) -> Resource:
    """OpenTelemetry's resource from its environment (`OTEL_SERVICE_NAME`,
    `OTEL_RESOURCE_ATTRIBUTES`), with this service's defaults where it says nothing."""
    attributes = dict(Resource.create().attributes)
    if str(attributes.get("service.name", "")).startswith("unknown_service"):
        attributes["service.name"] = _SERVICE
    attributes.setdefault("service.version", version)
    attributes.setdefault("service.instance.id", f"{socket.gethostname()}:{instance}")
    attributes.setdefault("deepinfra.model", model)
    return Resource(attributes)


def _exporter(protocol: str) -> SpanExporter:
    """OTLP's exporter for `protocol`; it reads its endpoint, headers, certificates, timeout
    and compression from OpenTelemetry's environment variables itself."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as OTLPHttpSpanExporter,
    )

    return OTLPHttpSpanExporter()
