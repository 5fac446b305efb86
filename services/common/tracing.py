"""OpenTelemetry for every service: the maintained gRPC instrumentation, OTLP export
configured by the standard OTEL_* variables, and a helper for domain attributes.

Health and reflection calls are not traced: probes every second would bury the
traces people come to read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import any_of, negate, service_prefix
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

log = logging.getLogger(__name__)

_UNTRACED = any_of(service_prefix("grpc.health."), service_prefix("grpc.reflection."))


def setup_tracing(service: str, env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install a tracer provider exporting OTLP when OTEL_* asks for it; else None."""
    env = os.environ if env is None else env
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or env.get("OTEL_TRACES_EXPORTER", "otlp") == "none" or env.get("OTEL_SDK_DISABLED") == "true":
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    name = env.get("OTEL_SERVICE_NAME") or f"healing-guard-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name, "service.namespace": "healing-guard"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting OTLP spans of %s to %s", name, endpoint)
    return provider


def server_interceptor() -> grpc.aio.ServerInterceptor:
    return aio_server_interceptor(filter_=negate(_UNTRACED))


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    return list(aio_client_interceptors(filter_=negate(_UNTRACED)))


def annotate(**attributes: str | int | float | bool) -> None:
    """Put domain attributes (tenant, failure class, action, leader) on the current span."""
    span = trace.get_current_span()
    if span.is_recording():
        for key, value in attributes.items():
            span.set_attribute(f"hg.{key}", value)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)
