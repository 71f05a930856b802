"""Logging in with an API key (or access token) and out again."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from producers.auth.principal import Scope
from taskctl.console.sessions import COOKIE, LOGIN_COOKIE, PATH, Sessions
from taskctl.console.web import FORM, Visit, html, local_path, redirect
from topology.errors import TaskqError

MAX_CREDENTIAL_CHARS = 8192  # an access token (JWT) can be long; nothing longer is read
LOGIN_FORM_S = 15 * 60  # how long a login form stays good


def _cookie(response: Response, name: str, value: str, max_age: int | None, secure: bool) -> None:
    # HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it.
    response.set_cookie(
        name, value, max_age=max_age, path=PATH, secure=secure, httponly=True, samesite="strict"
    )


def _form(request: Request, error: str | None, status: int) -> Response:
    """Return the login form with a fresh token, which its cookie must match when it is sent."""
    token = secrets.token_urlsafe(24)
    target = local_path(request.query_params.get("next"), "")
    page = html("login.html", status, token=token, target=target, error=error, caller=None)
    _cookie(page, LOGIN_COOKIE, token, LOGIN_FORM_S, request.url.scheme == "https")
    return page


async def login_form(sessions: Sessions, request: Request) -> Response:
    """Show the login form (or go home when already logged in)."""
    if sessions.find(request.cookies.get(COOKIE)) is not None:
        return redirect(f"{PATH}/")
    return _form(request, None, 200)


async def log_in(sessions: Sessions, request: Request) -> Response:
    """Check the credential and start a session; the form again, saying why, if it fails."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body() if kind == FORM else b""
    try:
        sent = parse_qs(body.decode(), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        sent = {}
    token = (sent.get("token") or [""])[0]
    expected = request.cookies.get(LOGIN_COOKIE) or ""
    # Login CSRF: another site cannot log this browser in under a credential of its own.
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        return _form(request, "the login form expired: try again", 403)
    credential = (sent.get("credential") or [""])[0].strip()
    if not credential or len(credential) > MAX_CREDENTIAL_CHARS:
        return _form(request, "enter an API key (tq_...) or an access token", 401)
    try:
        authenticator = request.app.state.services.authenticator
        caller = await authenticator.authenticate(f"Bearer {credential}")
    except TaskqError as exc:
        return _form(request, str(exc), 401)
    if not caller.scopes & {Scope.JOBS_READ, Scope.ADMIN}:
        return _form(request, "the console needs a credential with jobs:read or admin", 403)
    cookie, _ = sessions.start(credential)
    target = local_path(
        (sent.get("next") or [""])[0],
        f"{PATH}/" if Scope.ADMIN in caller.scopes else f"{PATH}/jobs",
    )
    response = redirect(target)
    secure = request.url.scheme == "https"
    _cookie(response, COOKIE, cookie, None, secure)  # a browser-session cookie
    response.delete_cookie(LOGIN_COOKIE, path=PATH)
    return response


async def log_out(sessions: Sessions, visit: Visit) -> Response:
    """End the session (a POST with its CSRF token) and show the login form."""
    sessions.end(visit.request.cookies.get(COOKIE))
    response = redirect(f"{PATH}/login")
    response.delete_cookie(COOKIE, path=PATH)
    return response
