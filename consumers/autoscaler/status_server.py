"""The autoscaler's HTTP face: ``/status`` (JSON, read by ``taskctl scale``) and ``/metrics``."""

from __future__ import annotations

import dataclasses

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumers.autoscaler.loop import Autoscaler
from consumers.autoscaler.metrics import AutoscalerMetrics


async def serve_status(
    autoscaler: Autoscaler, metrics: AutoscalerMetrics, *, host: str, port: int
) -> web.AppRunner:
    """Start serving the autoscaler's status and metrics; clean up the returned runner to stop."""

    async def status(_: web.Request) -> web.Response:
        groups = [dataclasses.asdict(s) for s in autoscaler.status.values()]
        return web.json_response({"groups": groups})

    async def prometheus(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", prometheus)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
