"""The API's front door: every request outside the public paths needs a valid credential."""

from __future__ import annotations

from urllib.parse import urlsplit

from prometheus_client import Counter
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from producers.api.problems import access_problem, problem, status_of
from producers.api.security import is_public
from producers.auth.authenticator import Authenticator
from topology.errors import AccessError, PermissionDeniedError, TaskqError

SUBPROTOCOL = "bearer"  # Sec-WebSocket-Protocol: bearer, <API key or access token>


class AuthGate:
    """Verifies the credential of every non-public request and stores its principal in the scope."""

    def __init__(
        self,
        app: ASGIApp,
        rate_limited: Counter,
        origins: frozenset[str] = frozenset(),
        retry_after: int = 5,
    ) -> None:
        self.app = app
        self._limited = rate_limited.labels("api")
        self._limited_ws = rate_limited.labels("websocket")
        self._origins = origins
        self._retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with ``scope["state"]["principal"]`` set, or refuse it."""
        kind = scope["type"]
        if kind not in ("http", "websocket") or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if kind == "websocket":
            await self._websocket(scope, receive, send, headers)
            return
        authorization = _header(headers, b"authorization")
        try:
            principal = await _authenticator(scope).authenticate(authorization)
        except TaskqError as exc:
            if status_of(exc) == 429:
                self._limited.inc()
            await self._refusal(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, headers: list[tuple[bytes, bytes]]
    ) -> None:
        origin = _header(headers, b"origin")
        if origin is not None and not self._origin_allowed(origin, _header(headers, b"host")):
            refusal = PermissionDeniedError(
                "this Origin may not open WebSockets here (TASKQ_WS_ORIGINS lists those that may)"
            )
            await deny_websocket(scope, receive, send, access_problem(refusal))
            return
        authorization = _header(headers, b"authorization")
        chosen = None
        if authorization is None:
            token = _subprotocol_token(_header(headers, b"sec-websocket-protocol"))
            if token is not None:
                authorization, chosen = f"Bearer {token}", SUBPROTOCOL
        try:
            principal = await _authenticator(scope).authenticate(authorization)
        except TaskqError as exc:
            if status_of(exc) == 429:
                self._limited_ws.inc()
            await deny_websocket(scope, receive, send, self._refusal(exc))
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        state["subprotocol"] = chosen
        await self.app(scope, receive, send)

    def _origin_allowed(self, origin: str, host: str | None) -> bool:
        """Return whether a browser page from ``origin`` may connect: listed, or same-origin."""
        if origin in self._origins or "*" in self._origins:
            return True
        return host is not None and urlsplit(origin).netloc == host

    def _refusal(self, error: TaskqError) -> Response:
        if isinstance(error, AccessError):
            return access_problem(error, retry_after=self._retry_after)
        if status_of(error) == 503:
            headers = {"Retry-After": str(self._retry_after)}
            return problem(503, f"{error}; retry later", headers=headers)
        return problem(500, "internal error")


async def deny_websocket(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """Refuse a WebSocket handshake with ``response``, or close it (1008) if the server cannot."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await response(scope, receive, send)
        return
    await send({"type": "websocket.close", "code": 1008, "reason": "refused"})


def _authenticator(scope: Scope) -> Authenticator:
    # The app's services (built in its lifespan) hold the authenticator, next to the store.
    authenticator: Authenticator = scope["app"].state.services.authenticator
    return authenticator


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _subprotocol_token(offered: str | None) -> str | None:
    """Return the token of ``Sec-WebSocket-Protocol: bearer, <token>``, or ``None``."""
    if offered is None:
        return None
    names = [n.strip() for n in offered.split(",") if n.strip()]
    if SUBPROTOCOL not in names:
        return None
    others = [n for n in names if n != SUBPROTOCOL]
    return others[0] if len(others) == 1 else None
