"""The autoscaler's HTTP face: ``/status`` (JSON, read by ``taskctl scale``) and ``/metrics``.

Both need a credential, like the job API: ``/status`` the ``admin`` scope, ``/metrics`` the
``metrics:read`` scope. Refusals are the API's problem+json answers (401, 403, 429, 503).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumers.autoscaler.loop import Autoscaler
from consumers.autoscaler.metrics import AutoscalerMetrics
from producers.api.problems import PROBLEM, refusal
from producers.auth.authenticator import Authenticator
from producers.auth.scopes import Scope
from topology.errors import AccessError, StoreUnavailableError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SCOPES = {"/status": Scope.ADMIN, "/metrics": Scope.METRICS_READ}


def gate(authenticator: Authenticator) -> Middleware:
    """Return middleware that lets in only callers holding the route's scope."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            caller = await authenticator.authenticate(request.headers.get("Authorization"))
            needed = _SCOPES.get(request.path)
            if needed is not None:
                caller.require(needed)
        except AccessError as exc:
            status, body, headers = refusal(exc)
            return web.json_response(body, status=status, headers=headers, content_type=PROBLEM)
        except StoreUnavailableError as exc:
            body = {"type": "about:blank", "title": "Service Unavailable", "status": 503}
            body["detail"] = f"{exc}; retry later"
            return web.json_response(
                body, status=503, headers={"Retry-After": "5"}, content_type=PROBLEM
            )
        return await handler(request)

    return check


async def serve_status(
    autoscaler: Autoscaler,
    metrics: AutoscalerMetrics,
    authenticator: Authenticator,
    *,
    host: str,
    port: int,
) -> web.AppRunner:
    """Start serving the autoscaler's status and metrics; clean up the returned runner to stop."""

    async def status(_: web.Request) -> web.Response:
        groups = [dataclasses.asdict(s) for s in autoscaler.status.values()]
        return web.json_response({"groups": groups})

    async def prometheus(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(middlewares=[gate(authenticator)])
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", prometheus)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
