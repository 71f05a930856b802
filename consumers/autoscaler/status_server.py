"""The autoscaler's HTTP face: ``/status`` (JSON, read by ``taskctl scale``) and ``/metrics``."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from consumers.autoscaler.loop import Autoscaler
from consumers.autoscaler.metrics import AutoscalerMetrics
from consumers.metrics_server import serve_metrics
from producers.auth.authenticator import Authenticator
from producers.auth.scopes import Scope


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

    return await serve_metrics(
        authenticator,
        host=host,
        port=port,
        registry=metrics.registry,
        more={"/status": (Scope.ADMIN, status)},
    )
