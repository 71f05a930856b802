"""The consumer processes' HTTP doors: an aiohttp gate that wants a credential, and ``/metrics``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from producers.auth.authenticator import Authenticator
from producers.auth.principal import Scope
from topology.errors import AccessError, StoreUnavailableError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Let in only callers holding the scope of the path."""
        try:
            caller = await authenticator.authenticate(request.headers.get("Authorization"))
            if request.path in routes:
                caller.require(routes[request.path][0])
        except (AccessError, StoreUnavailableError) as exc:
            # Imported here: the HTTP API's module brings FastAPI, which a worker would
            # otherwise load at every start (a third of its start-up) for a rare refusal.
            from producers.api.problems import PROBLEM, refusal

            status, body, headers = refusal(exc)
            return web.json_response(body, status=status, headers=headers, content_type=PROBLEM)
        return await handler(request)

    app = web.Application(middlewares=[gate])
    for path, (_, handler) in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
