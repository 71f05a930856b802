"""The API's Prometheus metrics, and the middlewares that time and trace every request."""

from __future__ import annotations

import functools
import time

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry import tracing
from telemetry.metrics import MetricSet, counter, histogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics(MetricSet):
    """Request counts and latencies by route template (never by raw path: bounded labels)."""

    requests = counter(
        "taskq_api_requests_total",
        "HTTP requests by route template, method and status code.",
        "route method status",
    )
    duration = histogram(
        "taskq_api_request_duration_seconds",
        "HTTP request duration by route template and method.",
        "route method",
        buckets=BUCKETS,
    )
    submitted = counter(
        "taskq_jobs_submitted_total",
        "Jobs accepted by the broker, by consumer group and priority.",
        "group priority",
    )
    # Doors are a fixed set: api, websocket, webhook:<source> (sources come from the topology).
    rate_limited = counter(
        "taskq_rate_limited_total",
        "Requests refused with 429 because a credential or webhook source used up its rate.",
        "door",
    )
    # Sources come from the topology; results are a fixed set (see webhooks.receiver).
    webhook_deliveries = counter(
        "taskq_webhook_deliveries_total",
        "Webhook deliveries by source and result (accepted, replayed, rejected_signature, ...).",
        "source result",
    )


class MetricsMiddleware:
    """Times every HTTP request and counts it under its route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        # Label children are cached: labels() costs more than the increment itself. There
        # are few keys: routes are templates, and methods and statuses are few.
        self._requests = functools.cache(metrics.requests.labels)
        self._durations = functools.cache(metrics.duration.labels)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request and record its route, status and duration."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            # The router records the matched route in the scope; unmatched paths share one label.
            route = str(getattr(scope.get("route"), "path", "unmatched"))
            self._requests(route, scope["method"], str(status)).inc()
            self._durations(route, scope["method"]).observe(time.perf_counter() - started)


class TracingMiddleware:
    """Runs each HTTP request in a span that continues the caller's ``traceparent``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request in a span named after its method and route template."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = scope.get("method", "GET")
        with tracing.span(
            f"{method} {scope.get('path', '')}",
            kind=SpanKind.SERVER,
            parent_headers=headers,
            attributes={"http.request.method": method},
        ) as span:

            async def send_status(message: Message) -> None:
                if span is not None and message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, send_status)
            route = scope.get("route")
            if span is not None and route is not None:  # a template: few distinct span names
                span.update_name(f"{method} {getattr(route, 'path', scope.get('path', ''))}")
