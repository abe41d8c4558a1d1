"""Whether a server traces, from OpenTelemetry's own environment variables alone: off unless an
OTLP endpoint is set, the engine's endpoint derived as vLLM takes it, and a setting this server
cannot use refused at start, naming it."""

from __future__ import annotations

import pytest

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
