"""Assemble the HTTP job API: routes, the auth gate, error handling, body limits, metrics, lifespan."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.routing import BaseRoute
from starlette.types import Scope as AsgiScope

from producers.api import flow_routes, problems, routes
from producers.api.guards import BodyLimit
from producers.api.metrics import ApiMetrics, MetricsMiddleware, TracingMiddleware
from producers.api.schemas import Problem
from producers.api.security import SCHEME, AuthGate, SecuredRoute, check_doors, secured, under
from producers.auth.authenticator import Authenticator, open_authenticator
from producers.auth.principal import Scope
from producers.publisher import ConfirmedPublisher
from producers.submit import Submitter
from producers.watchers import EventHub
from telemetry import tracing
from topology.errors import TaskqError
from topology.settings import ApiSettings, AuthSettings

Ready = Callable[[], Awaitable[None]]
# Which problems each kind of operation can answer (besides its success).
_ALWAYS = (422, 503)
_BY_METHOD = {"post": (409, 413, 415), "delete": (404, 409), "get": ()}
_SECURED = (401, 403, 429)  # no or a bad credential, a missing scope, a used-up rate
_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "An API key (`tq_<id>_<secret>`, from `taskctl keys create` or the file "
        "`taskctl up` writes) or an OAuth2/OIDC access token (JWT)."
    ),
}


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


@dataclass(frozen=True, slots=True)
class OwnDoor:
    """Routes under ``prefix`` that authenticate their own callers (the web console's sessions)."""

    prefix: str  # "/console": the gate lets it and every path below it through
    routes: Sequence[BaseRoute]


def create_app(
    services: Services | ServicesFactory,
    settings: ApiSettings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    routers: Sequence[APIRouter] = (),
    own_doors: Sequence[OwnDoor] = (),
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
    # labels() costs more than the increment; the labels are few (groups and priorities).
    app.state.submitted = functools.cache(metrics.submitted.labels)
    app.state.api_settings = api
    app.router.route_class = SecuredRoute
    problems.install(app, retry_after=api.retry_after)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(routes.router)
    app.include_router(flow_routes.router)
    for router in routers:  # routes of the packages above this one (the DLQ admin routes)
        app.include_router(router)
    for door in own_doors:
        strays = [r for r in door.routes if not under(getattr(r, "path", ""), door.prefix)]
        if strays:  # a route outside its prefix would pass the gate unchecked
            raise RuntimeError(f"routes {strays} lie outside their door {door.prefix}")
        app.router.routes.extend(door.routes)
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
        own_doors=tuple(door.prefix for door in own_doors),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if tracing.enabled():  # off: not even a pass-through layer on the request path
        app.add_middleware(TracingMiddleware)
    return app


def _health_routes(app: FastAPI, metrics: ApiMetrics) -> None:
    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="The broker is connected and the job store answers",
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
        # Under ``taskctl up`` every process writes to PROMETHEUS_MULTIPROC_DIR: serve them all.
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]  # untyped in prometheus_client 0.26
            scraped = generate_latest(merged)
        else:
            scraped = generate_latest(metrics.registry) + generate_latest(REGISTRY)
        return Response(scraped, media_type=CONTENT_TYPE_LATEST)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """Return the OpenAPI document: problem+json errors, and the bearer scheme where needed."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema()
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            codes = set(_ALWAYS) | set(_BY_METHOD.get(method, ()))
            if "{" in path:
                codes.add(404)
            if path in ("/healthz", "/metrics"):
                codes = set()
            if operation.get("security"):
                codes |= set(_SECURED)
            responses = operation.setdefault("responses", {})
            for code in [c for c in responses if c.isdigit() and int(c) >= 400]:
                del responses[code]
            for code in sorted(codes):
                responses[str(code)] = {
                    "description": problems.TITLES.get(code, "Error"),
                    "content": {
                        problems.PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    },
                }
    document["components"]["securitySchemes"] = {SCHEME: _BEARER}
    app.openapi_schema = document
    return document
