"""The autoscaler's HTTP face: ``/status`` (JSON, read by ``taskctl scale``) and ``/metrics``."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from consumers.autoscaler.loop import Autoscaler
from consumers.autoscaler.metrics import AutoscalerMetrics
from consumers.metrics_server import gate, metrics_handler
from producers.auth.authenticator import Authenticator
from producers.auth.scopes import Scope

_SCOPES = {"/status": Scope.ADMIN, "/metrics": Scope.METRICS_READ}


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

    app = web.Application(middlewares=[gate(authenticator, _SCOPES)])
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics_handler(metrics.registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
