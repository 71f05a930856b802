"""The API's front door: the credential each non-public request needs, and each route's scope."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from prometheus_client import Counter
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from producers.api.problems import error_response, problem, status_of
from producers.auth.authenticator import Authenticator
from producers.auth.principal import Principal, Scope
from topology.errors import AuthenticationError, PermissionDeniedError, TaskqError
from topology.limits import excerpt

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
SCHEME = "bearer"
SUBPROTOCOL = "bearer"  # Sec-WebSocket-Protocol: bearer, <API key or access token>
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
PUBLIC_PREFIXES = ("/webhooks/",)  # webhook receivers: their senders' signatures authenticate them


def is_public(path: str) -> bool:
    """Return whether ``path`` is open to callers without a credential."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def under(path: str, prefix: str) -> bool:
    """Return whether ``path`` is ``prefix`` or lies below it (``/console/x``, not ``/consoles``)."""
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


class AuthGate:
    """Verifies the credential of every non-public request and stores its principal in the scope."""

    def __init__(
        self,
        app: ASGIApp,
        rate_limited: Counter,
        origins: frozenset[str] = frozenset(),
        retry_after: int = 5,
        own_doors: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        # Path prefixes whose routes authenticate their own callers (the console's sessions).
        self._own_doors = own_doors
        self._limited = {
            "http": rate_limited.labels("api"),
            "websocket": rate_limited.labels("websocket"),
        }
        self._origins = origins
        self._retry_after = retry_after

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        """Pass the request on with ``scope["state"]["principal"]`` set, or refuse it."""
        kind = scope["type"]
        path = scope.get("path", "")
        if kind not in ("http", "websocket") or is_public(path) or self._own_door(path):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        chosen = None
        if kind == "websocket":
            origin = headers.get("origin")
            if origin is not None and not self._origin_allowed(origin, headers.get("host")):
                refusal = PermissionDeniedError(
                    "this Origin may not open WebSockets here (TASKQ_WS_ORIGINS lists those that may)"
                )
                await deny_websocket(scope, receive, send, error_response(refusal))
                return
            token = _subprotocol_token(headers.get("sec-websocket-protocol"))
            if authorization is None and token is not None:
                authorization, chosen = f"Bearer {token}", SUBPROTOCOL
        try:
            # The app's services (built in its lifespan) hold the authenticator, next to the store.
            authenticator: Authenticator = scope["app"].state.services.authenticator
            principal = await authenticator.authenticate(authorization)
        except TaskqError as exc:
            if status_of(exc) == 429:
                self._limited[kind].inc()
            response = error_response(exc, retry_after=self._retry_after)
            if kind == "websocket":
                await deny_websocket(scope, receive, send, response)
            else:
                await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["subprotocol"] = chosen
        await self.app(scope, receive, send)

    def _own_door(self, path: str) -> bool:
        return any(under(path, prefix) for prefix in self._own_doors)

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        """Return whether a browser page from ``origin`` may connect: listed, or same-origin."""
        if origin in self._origins or "*" in self._origins:
            return True
        return host is not None and urlsplit(origin).netloc == host


async def deny_websocket(
    scope: AsgiScope, receive: Receive, send: Send, response: Response
) -> None:
    """Refuse a WebSocket handshake with ``response``, or close it (1008) if the server cannot."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await response(scope, receive, send)
        return
    await send({"type": "websocket.close", "code": 1008, "reason": "refused"})


def _subprotocol_token(offered: str | None) -> str | None:
    """Return the token of ``Sec-WebSocket-Protocol: bearer, <token>``, or ``None``."""
    names = [n.strip() for n in (offered or "").split(",") if n.strip()]
    others = [n for n in names if n != SUBPROTOCOL]
    return others[0] if SUBPROTOCOL in names and len(others) == 1 else None


def secured(scope: Scope) -> dict[str, Any]:
    """Return the route arguments that make a route need ``scope``."""
    return {"openapi_extra": {"security": [{SCHEME: [scope.value]}]}}


def required_scope(route: APIRoute) -> Scope | None:
    """Return the scope a route declared with ``secured``, or ``None``."""
    for requirement in (route.openapi_extra or {}).get("security", ()):
        for name in requirement.get(SCHEME, ()):
            return Scope(name)
    return None


def principal(connection: HTTPConnection) -> Principal:
    """Return the caller the gate verified for this request or WebSocket."""
    found = connection.scope.get("state", {}).get("principal")
    if not isinstance(found, Principal):
        raise AuthenticationError("send Authorization: Bearer <API key or access token>")
    return found


class StrictJsonRequest(Request):
    """A request whose JSON body is parsed by orjson: strict RFC 8259, no NaN, bounded depth."""

    # Python's json module accepts NaN, Infinity and a BOM, and raises RecursionError on deep
    # nesting; orjson refuses all of them cleanly.

    async def json(self) -> Any:
        """Return the parsed body (``orjson.JSONDecodeError`` is a ``json.JSONDecodeError``)."""
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class SecuredRoute(APIRoute):
    """A route that refuses a caller lacking its declared scope, then parses JSON bodies strictly."""

    def get_route_handler(self) -> Handler:
        """Return the handler, behind the scope check, fed with strict-JSON requests."""
        handler = super().get_route_handler()
        needed = required_scope(self)

        async def guarded(request: Request) -> Response:
            # The scope first, so a caller without it learns nothing about the body.
            if needed is not None:
                try:
                    principal(request).require(needed)
                except (AuthenticationError, PermissionDeniedError) as exc:
                    return error_response(exc)
            if request.method == "POST":
                # Before FastAPI reads the body: anything but JSON is refused with 415.
                kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind != "application/json":
                    detail = (
                        f"send Content-Type: application/json, not {excerpt(kind or 'nothing')}"
                    )
                    return problem(415, detail)
            return await handler(StrictJsonRequest(request.scope, request.receive))

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
