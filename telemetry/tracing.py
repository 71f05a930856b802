"""OpenTelemetry for taskq: off and free by default, on through the standard OTEL_* variables."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, Span, SpanKind

_state: dict[str, Any] = {"tracer": None}


def enabled() -> bool:
    """Return whether tracing is on in this process."""
    return _state["tracer"] is not None


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Return whether the standard OTEL_* variables ask for traces to be exported."""
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(exporter or endpoint)


def configure_tracing(service: str) -> bool:
    """Turn tracing on when the environment asks for it; return whether it is on."""
    if not wanted():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    service_name = os.environ.get("OTEL_SERVICE_NAME", service)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    enable(provider)
    return True


def enable(provider: TracerProvider) -> None:
    """Trace through ``provider`` from now on (tests pass one with an in-memory exporter)."""
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

    instrumentor = AioPikaInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
    _state["tracer"] = provider.get_tracer("taskq")


def disable() -> None:
    """Stop tracing in this process (tests)."""
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

    instrumentor = AioPikaInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    _state["tracer"] = None


def inject(headers: MutableMapping[str, Any]) -> None:
    """Write the current trace context into message headers (nothing when tracing is off)."""
    # taskq's publisher writes frames below aio-pika, so AioPikaInstrumentor never sees them.
    if _state["tracer"] is not None:
        propagate.inject(headers)


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent_headers: Mapping[str, Any] | None = None,
    link_headers: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span | None]:
    """Run the block in a span under ``parent_headers``' context or linked to ``link_headers``' (``None`` when off)."""
    tracer = _state["tracer"]
    if tracer is None:
        yield None
        return
    carrier = {k: v for k, v in (parent_headers or {}).items() if isinstance(v, str)}
    parent = propagate.extract(carrier) if parent_headers is not None else None
    links = []
    if link_headers is not None:
        linked = trace.get_current_span(propagate.extract(dict(link_headers))).get_span_context()
        if linked.is_valid:
            links.append(Link(linked))
    token = otel_context.attach(parent) if parent is not None else None
    try:
        with tracer.start_as_current_span(
            name, kind=kind, links=links, attributes=dict(attributes or {})
        ) as current:
            yield current
    finally:
        if token is not None:
            otel_context.detach(token)


def current() -> object | None:
    """Return the active trace context, to publish in later (``None`` when tracing is off)."""
    return otel_context.get_current() if _state["tracer"] is not None else None


def trace_id(saved: object | None = None) -> str | None:
    """Return the trace id (32 hex digits) of ``saved`` (a context ``current`` returned) or of now; ``None`` when off."""
    if _state["tracer"] is None:
        return None
    context = cast(otel_context.Context, saved) if saved is not None else None
    found = trace.get_current_span(context).get_span_context()
    return f"{found.trace_id:032x}" if found.is_valid else None


@contextmanager
def resumed(saved: object | None) -> Iterator[None]:
    """Run the block in a context ``current`` returned (as it is when ``saved`` is ``None``)."""
    if saved is None:
        yield
        return
    token = otel_context.attach(cast(otel_context.Context, saved))
    try:
        yield
    finally:
        otel_context.detach(token)
