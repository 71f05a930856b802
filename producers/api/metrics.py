"""The API's Prometheus metrics, on a registry the app owns (no globals)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    """Request counts and latencies by route template (never by raw path: bounded labels)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "taskq_api_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "taskq_api_request_duration_seconds",
            "HTTP request duration by route template and method.",
            ["route", "method"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.submitted = Counter(
            "taskq_jobs_submitted_total",
            "Jobs accepted by the broker, by consumer group and priority.",
            ["group", "priority"],
            registry=registry,
        )


class MetricsMiddleware:
    """Times every HTTP request and counts it under its route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

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
            route = _template(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.duration.labels(route, scope["method"]).observe(
                time.perf_counter() - started
            )


def _template(scope: Scope) -> str:
    # The router records the matched route in the scope; unmatched paths share one label.
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
