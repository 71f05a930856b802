"""The consumer processes' HTTP doors: an aiohttp gate that wants a credential, and ``/metrics``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from producers.api.problems import PROBLEM, refusal
from producers.auth.authenticator import Authenticator
from producers.auth.scopes import Scope
from topology.errors import AccessError, StoreUnavailableError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def gate(authenticator: Authenticator, scopes: Mapping[str, Scope]) -> Middleware:
    """Return middleware that lets in only callers holding the scope ``scopes`` names for the path."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            caller = await authenticator.authenticate(request.headers.get("Authorization"))
            needed = scopes.get(request.path)
            if needed is not None:
                caller.require(needed)
        except (AccessError, StoreUnavailableError) as exc:
            status, body, headers = refusal(exc)
            return web.json_response(body, status=status, headers=headers, content_type=PROBLEM)
        return await handler(request)

    return check


async def serve_metrics(
    authenticator: Authenticator,
    *,
    host: str,
    port: int,
    registry: CollectorRegistry,
    more: Mapping[str, tuple[Scope, Handler]] | None = None,
) -> web.AppRunner:
    """Serve ``/metrics`` (scope ``metrics:read``) and ``more`` routes; clean up the runner to stop."""

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    routes = {"/metrics": (Scope.METRICS_READ, prometheus), **(more or {})}
    app = web.Application(middlewares=[gate(authenticator, {p: s for p, (s, _) in routes.items()})])
    for path, (_, handler) in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
