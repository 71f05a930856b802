"""Which scope each route needs, and the route class that refuses callers without it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from producers.api.problems import access_problem
from producers.auth.principal import Principal
from producers.auth.scopes import Scope
from topology.errors import AuthenticationError, PermissionDeniedError

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
SCHEME = "bearer"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
PUBLIC_PREFIXES = ("/webhooks/",)  # webhook receivers: their senders' signatures authenticate them


def is_public(path: str) -> bool:
    """Return whether ``path`` is open to callers without a credential."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def secured(scope: Scope) -> dict[str, Any]:
    """Return the route arguments that make a route need ``scope``."""
    return {"openapi_extra": {"security": [{SCHEME: [scope.value]}]}}


def required_scope(route: APIRoute) -> Scope | None:
    """Return the scope a route declared with ``secured``, or ``None``."""
    for requirement in (route.openapi_extra or {}).get("security", ()):
        for name in requirement.get(SCHEME, ()):
            return Scope(name)
    return None


def principal(request: Request) -> Principal:
    """Return the caller the gate verified for this request."""
    found = request.scope.get("state", {}).get("principal")
    if not isinstance(found, Principal):
        raise AuthenticationError("send Authorization: Bearer <API key or access token>")
    return found


class SecuredRoute(APIRoute):
    """A route that answers 403 to a caller lacking its declared scope, before reading the body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Return the handler behind the scope check."""
        return self.guard(super().get_route_handler())

    def guard(self, handler: Handler) -> Handler:
        """Return ``handler`` behind the check of this route's declared scope."""
        needed = required_scope(self)
        if needed is None:
            return handler

        async def guarded(request: Request) -> Response:
            try:
                principal(request).require(needed)
            except (AuthenticationError, PermissionDeniedError) as exc:
                return access_problem(exc)
            return await handler(request)

        return guarded


def check_doors(routes: Iterable[BaseRoute]) -> None:
    """Refuse an app in which a non-public HTTP route declares no scope, or checks none."""
    for route in routes:
        if not isinstance(route, APIRoute) or is_public(route.path):
            continue
        if required_scope(route) is None or not isinstance(route, SecuredRoute):
            raise RuntimeError(
                f"route {sorted(route.methods or ())} {route.path} must be a SecuredRoute declaring "
                "its scope with secured(...)"
            )
