"""Assemble the HTTP job API: routes, the auth gate, error handling, body limits, metrics, lifespan."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import Scope as AsgiScope

from producers.api import openapi, problems, routes
from producers.api.gate import AuthGate
from producers.api.guards import BodyLimit
from producers.api.hub import EventHub
from producers.api.metrics import ApiMetrics, MetricsMiddleware
from producers.api.schemas import Problem
from producers.api.security import SecuredRoute, check_doors, secured
from producers.api.tracing import TracingMiddleware
from producers.auth.authenticator import Authenticator, open_authenticator
from producers.auth.scopes import Scope
from producers.publisher import ConfirmedPublisher
from producers.submit import Submitter
from telemetry import tracing
from topology.errors import TaskqError
from topology.settings import ApiSettings, AuthSettings

Ready = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class Services:
    """What the routes work with; built by the lifespan, or injected by tests."""

    submitter: Submitter
    hub: EventHub = field(default_factory=EventHub)
    ready: Ready | None = None
    close: Callable[[], Awaitable[None]] | None = None
    publisher: ConfirmedPublisher | None = None  # for routes above this package (admin)
    # Checks credentials against the submitter's store (default settings unless given).
    authenticator: Authenticator | None = None

    def __post_init__(self) -> None:
        if self.authenticator is None:
            self.authenticator = open_authenticator(self.submitter.store, AuthSettings())


ServicesFactory = Callable[[], Awaitable[Services]]


def create_app(
    services: Services | ServicesFactory,
    settings: ApiSettings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """Return the API app; ``services`` is ready-made (tests) or built in the lifespan."""
    api = settings or ApiSettings()
    metrics = ApiMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = services if isinstance(services, Services) else await services()
        app.state.services = built
        try:
            yield
        finally:
            if built.close is not None:
                await built.close()

    app = FastAPI(
        title="taskq",
        version="0.1.0",
        summary="Submit jobs to RabbitMQ with confirms, and follow them to completion.",
        lifespan=lifespan,
    )
    if isinstance(services, Services):
        app.state.services = services
    app.state.metrics = metrics
    app.state.submitted_children = {}  # label children of metrics.submitted, by labels
    app.state.api_settings = api
    app.router.route_class = SecuredRoute
    problems.install(app, retry_after=api.retry_after)
    openapi.install(app)
    app.add_exception_handler(routes._Unsupported, routes.unsupported_handler)
    app.include_router(routes.router)
    for router in routers:  # routes of the packages above this one (the DLQ admin routes)
        app.include_router(router)
    _health_routes(app, metrics)
    check_doors(app.routes)

    def limit(scope: AsgiScope) -> int:
        batch = scope.get("path", "").endswith("/batch")
        return api.max_batch_body_bytes if batch else api.max_body_bytes

    # Outermost last: metrics see every answer, the gate refuses strangers before the body
    # limit buffers anything, and the body limit guards what the routes read.
    app.add_middleware(BodyLimit, limit=limit)
    app.add_middleware(
        AuthGate,
        rate_limited=metrics.rate_limited,
        origins=api.allowed_origins,
        retry_after=api.retry_after,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if tracing.enabled():  # off: not even a pass-through layer on the request path
        app.add_middleware(TracingMiddleware)
    return app


def scrape(registry: CollectorRegistry) -> bytes:
    """Return the text exposition of this host's taskq processes (or of this process alone).

    Under ``taskctl up`` every process writes its metrics to ``PROMETHEUS_MULTIPROC_DIR`` and
    this aggregates them all; otherwise it is the API's own registry plus the process-wide one
    (process and platform collectors).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]  # untyped in prometheus_client 0.26
        return generate_latest(merged)
    return generate_latest(registry) + generate_latest(REGISTRY)


def _health_routes(app: FastAPI, metrics: ApiMetrics) -> None:
    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="The broker is connected and the job store answers",
        responses={503: {"model": Problem}},
    )
    async def readyz(request: Request) -> Response:
        services: Services = request.app.state.services
        try:
            await services.submitter.store.ping()
            if services.ready is not None:
                await services.ready()
        except TaskqError as exc:
            return problems.problem(503, f"not ready: {exc}", headers={"Retry-After": "5"})
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
        **secured(Scope.METRICS_READ),
    )
    async def prometheus() -> Response:
        return Response(scrape(metrics.registry), media_type=CONTENT_TYPE_LATEST)
