"""Whether a server traces, from OpenTelemetry's own environment variables alone: off unless an
OTLP endpoint is set, the engine's endpoint derived as vLLM takes it, and a setting this server
cannot use refused at start, naming it; a request's server span holds content only when the
server logs it, and nothing when the sampler leaves it out."""

from __future__ import annotations

from typing import Any, cast

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

from deepinfra_serve.config.pricing import PromptTokensDetails, Usage
from deepinfra_serve.observability.record import RequestRecord
from deepinfra_serve.observability.spans import RequestTrace, Tracing
from deepinfra_serve.observability.tracing import TracingError, TracingSettings, settings_from


def test_tracing_is_off_unless_an_otlp_endpoint_is_set() -> None:
    assert settings_from({}) is None
    assert settings_from({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}) is None
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
    assert settings_from(on) == TracingSettings("grpc", "http://collector:4317")
    assert settings_from({**on, "OTEL_SDK_DISABLED": "true"}) is None
    assert settings_from({**on, "OTEL_TRACES_EXPORTER": "none"}) is None


def test_the_engines_endpoint_is_the_traces_endpoint_of_the_protocol() -> None:
    # OTLP over HTTP appends the signal's path to the general endpoint, not to the traces one.
    http = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    assert settings_from(http) == TracingSettings("http/protobuf", "http://c:4318/v1/traces")
    traces = {
        **http,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/custom",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
    }
    assert settings_from(traces) == TracingSettings("grpc", "http://t:4318/custom")


@pytest.mark.parametrize(
    ("setting", "value"),
    [("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"), ("OTEL_TRACES_EXPORTER", "zipkin")],
)
def test_a_setting_it_cannot_use_is_refused_naming_it(setting: str, value: str) -> None:
    with pytest.raises(TracingError, match=setting):
        settings_from({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", setting: value})


class _Tracing:
    """What a `RequestTrace` reads of its `Tracing`: a tracer (here, an in-memory one)."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer


def _ended(capture_content: bool, sampled: bool = True) -> tuple[RequestTrace, list[Any]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    trace = RequestTrace(cast(Tracing, _Tracing(tracer)), tracer.start_span("POST /x"))
    record = RequestRecord(request_id="r1", model="m", capture_content=capture_content)
    record.capture("input", "a prompt")
    record.status = 200
    trace.end(record, Usage(3, 2, 5, PromptTokensDetails(0), 0.5), None)
    return trace, list(exporter.get_finished_spans())


def test_prompts_and_outputs_are_in_a_span_only_when_the_server_logs_content() -> None:
    _, [span] = _ended(capture_content=False)
    assert span.attributes is not None
    assert "deepinfra.content" not in span.attributes
    assert "a prompt" not in repr(dict(span.attributes))
    assert span.attributes["gen_ai.usage.input_tokens"] == 3
    _, [span] = _ended(capture_content=True)
    assert span.attributes is not None
    assert span.attributes["deepinfra.content"] == '{"input":"a prompt"}'


def test_a_request_the_sampler_leaves_out_records_nothing_and_logs_no_trace_id() -> None:
    trace, spans = _ended(capture_content=True, sampled=False)
    assert spans == [] and trace.trace_id is None and not trace.recording
