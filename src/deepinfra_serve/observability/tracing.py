"""Whether requests are traced, read from OpenTelemetry's own environment variables.

Tracing is off unless an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
`OTEL_EXPORTER_OTLP_ENDPOINT`), and `OTEL_SDK_DISABLED` or `OTEL_TRACES_EXPORTER=none` turn it
off again. This module imports nothing of OpenTelemetry: with tracing off, the server never
imports `spans`, and a request's only cost is one `is None` check where a span would start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spans import Tracing

PROTOCOLS = ("grpc", "http/protobuf")


class TracingError(ValueError):
    """An OTEL_* setting this server cannot use (said at start, not on the first request)."""


@dataclass(frozen=True, slots=True)
class TracingSettings:
    protocol: str  # grpc or http/protobuf
    # Where spans go, as vLLM's `otlp_traces_endpoint` takes it: a gRPC address, or the full
    # URL of an HTTP collector's traces path.
    traces_endpoint: str


def settings_from(environ: Mapping[str, str]) -> TracingSettings | None:
    """The tracing settings in `environ`; None when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "none":
        return None
    if exporter != "otlp":
        raise TracingError(f"OTEL_TRACES_EXPORTER: otlp or none, not {exporter!r}")
    name = next(
        (
            n
            for n in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
            if environ.get(n)
        ),
        None,
    )
    # grpc when neither is set: vLLM's default, so that the engine and the server agree.
    protocol = "grpc" if name is None else environ[name].strip()
    if protocol not in PROTOCOLS:
        raise TracingError(f"{name}: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not base:
            return None
        # The signal-less endpoint is a base URL: OTLP over HTTP appends the signal's path.
        endpoint = base if protocol == "grpc" else base.rstrip("/") + "/v1/traces"
    return TracingSettings(protocol, endpoint)


def start_tracing(
    environ: Mapping[str, str], model: str, instance: str, version: str
) -> Tracing | None:
    """This process's tracer, when `environ` configures one; None when tracing is off."""
    settings = settings_from(environ)
    if settings is None:
        return None
    from .spans import Tracing

    return Tracing(settings, model, instance, version)
