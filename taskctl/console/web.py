"""What every console page shares: templates, the session check, CSRF, forms and safe headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from loguru import logger
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from producers.api.app import Services
from producers.api.problems import status_of
from producers.auth.principal import Principal, Scope
from taskctl.console.sessions import COOKIE, PATH, Session, Sessions
from telemetry.redaction import redact_text, redact_value
from topology.errors import AccessError, JobRejectedError, TaskqError

FORM = "application/x-www-form-urlencoded"
MAX_TEXT = 255  # the longest text filter a form may send
MAX_FIELDS = 1000  # a form with more fields is refused (a replay of up to 500 chosen letters)
# No inline script or style anywhere: the page's own files only, and no framing.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make a POST's Origin "null"
    "Cache-Control": "no-store",
}
STATIC = {  # name: (media type, body), read once: two small files
    name: (kind, (files("taskctl.console") / "static" / name).read_bytes())
    for name, kind in (
        ("console.css", "text/css; charset=utf-8"),
        ("console.js", "text/javascript; charset=utf-8"),
    )
}


def _ago(when: datetime | None) -> str:
    if when is None:
        return "-"
    return seconds_text((datetime.now(UTC) - when).total_seconds()) + " ago"


def seconds_text(seconds: float | None) -> str:
    """Return a short human duration: ``42s``, ``3m20s``, ``5h02m``, ``2d04h``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _epoch(epoch: float | None) -> datetime | None:
    """Return a time the autoscaler gives in seconds since the epoch (0 or none: ``None``)."""
    return datetime.fromtimestamp(epoch, UTC) if isinstance(epoch, int | float) and epoch else None


def _shown(value: Any) -> str:
    """Return a payload or result as indented JSON, redacted as the logs redact."""
    return orjson.dumps(redact_value(value), option=orjson.OPT_INDENT_2).decode()


def when(value: datetime | None) -> str:
    """Return a time as every console page shows it: to the second, in UTC."""
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES = Environment(
    loader=PackageLoader("taskctl.console", "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters.update(
    ago=_ago,
    when=when,
    epoch=_epoch,
    shown=_shown,
    redacted=redact_text,
)


def html(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Return ``template`` rendered with ``context``, with the console's headers."""
    body = TEMPLATES.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def redirect(to: str) -> RedirectResponse:
    """Return a 303 to ``to`` (after a POST, the browser GETs it)."""
    return RedirectResponse(to, status_code=303, headers={"Cache-Control": "no-store"})


def local_path(value: str | None, default: str) -> str:
    """Return ``value`` if it is a console path (no open redirect to another site), else ``default``."""
    if value and value.startswith(PATH + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return default


async def static(request: Request) -> Response:
    """Serve one of the console's own files (public: they hold no data)."""
    found = STATIC.get(request.path_params["name"])
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain")
    kind, body = found
    return Response(body, media_type=kind, headers={"Cache-Control": "max-age=300"})


@dataclass(slots=True)
class Visit:
    """One request of a logged-in session: who it is, and the form it sent."""

    request: Request
    caller: Principal
    session: Session
    form: dict[str, list[str]] = field(default_factory=dict)

    @property
    def services(self) -> Services:
        """Return the API's services (store, publisher, hub)."""
        services: Services = self.request.app.state.services
        return services

    def field(self, name: str, most: int | None = None) -> str | None:
        """Return a form field or query parameter, stripped, of at most ``most`` characters; ``None`` when absent or blank."""
        values = self.form.get(name) or self.request.query_params.getlist(name)
        value = values[0].strip() if values else ""
        if most is not None and len(value) > most:
            raise JobRejectedError(f"{name}: at most {most} characters", field=name)
        return value or None

    def fields(self, name: str) -> list[str]:
        """Return every value of a repeated form field (checkboxes)."""
        return [v for v in self.form.get(name, []) if v]

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Return ``template`` rendered for this session (its caller, CSRF token, admin or not)."""
        return html(
            template,
            status,
            caller=self.caller,
            csrf=self.session.csrf,
            admin=Scope.ADMIN in self.caller.scopes,
            jobs_reader=Scope.JOBS_READ in self.caller.scopes,
            path=self.request.url.path,
            **context,
        )


Page = Callable[[Visit], Awaitable[Response]]


def guarded(
    sessions: Sessions, scope: Scope | None, page: Page
) -> Callable[[Request], Awaitable[Response]]:
    """Return an endpoint running ``page`` for a live session holding ``scope`` (any: ``None``), a POST only with its CSRF token and from this origin."""

    async def endpoint(request: Request) -> Response:
        session = sessions.find(request.cookies.get(COOKIE))
        if session is None:
            if request.method == "GET" and "text/event-stream" not in request.headers.get(
                "accept", ""
            ):
                return redirect(f"{PATH}/login?next={quote(request.url.path)}")
            return html("error.html", 401, message="log in first", caller=None)
        try:
            caller = await request.app.state.services.authenticator.authenticate(
                f"Bearer {session.credential}"
            )
        except TaskqError as exc:
            if isinstance(exc, AccessError) and status_of(exc) == 401:
                sessions.end(request.cookies.get(COOKIE))  # revoked or expired since the login
            return html("error.html", status_of(exc), message=str(exc), caller=None)
        visit = Visit(request, caller, session)
        if request.method == "POST":
            refusal = await _read_form(visit)
            if refusal is not None:
                return refusal
        if scope is not None and scope not in caller.scopes:
            return visit.page(
                "error.html", 403, message=f"this page needs a credential with the {scope} scope"
            )
        try:
            return await page(visit)
        except TaskqError as exc:
            logger.info("console {} {}: {}", request.method, request.url.path, exc)
            return visit.page("error.html", status_of(exc), message=str(exc))

    return endpoint


async def _read_form(visit: Visit) -> Response | None:
    """Read a POST's form into the visit; return the refusal of a forged or malformed one."""
    request = visit.request
    origin = request.headers.get("origin")
    # The host alone: behind a proxy that ends TLS, this side sees http where the browser says https.
    if origin is not None and urlsplit(origin).netloc != request.url.netloc:
        return visit.page("error.html", 403, message="a form of another site was refused")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM:
        return visit.page("error.html", 415, message=f"send a form ({FORM})")
    try:
        visit.form = parse_qs(
            (await request.body()).decode(), keep_blank_values=True, max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        return visit.page("error.html", 400, message="the form could not be read")
    if not visit.session.csrf_matches((visit.form.get("csrf") or [""])[0]):
        return visit.page("error.html", 403, message="the form's CSRF token is missing or stale")
    return None
