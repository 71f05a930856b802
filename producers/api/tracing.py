"""A SERVER span per HTTP request, continuing a caller's ``traceparent`` (installed only when tracing is on)."""

from __future__ import annotations

from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telemetry import tracing


class TracingMiddleware:
    """Runs each HTTP request inside a span, so the jobs it publishes join the request's trace."""

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
