"""Every error the API returns, as an RFC 9457 problem: clear 4xx for bad input, 503 when down."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.exceptions import HTTPException

from producers.auth.authenticator import retry_after as wait_header
from producers.metrics import UNAVAILABLE
from topology.errors import (
    AccessError,
    AuthenticationError,
    ContractError,
    IdempotencyInFlightError,
    JobNotFoundError,
    JobRejectedError,
    JobStateError,
    PermissionDeniedError,
    RateLimitedError,
    ReservedJobTypeError,
    TaskqError,
)

PROBLEM = "application/problem+json"
# RFC 9110's names, which Python 3.11 has for all but these two.
TITLES = {s.value: s.phrase for s in HTTPStatus} | {
    413: "Content Too Large",
    422: "Unprocessable Content",
}


def problem_body(status: int, detail: str) -> dict[str, Any]:
    """Return the fields of a problem without field errors."""
    return {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }


def problem(
    status: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Return a problem+json response."""
    body = problem_body(status, detail)
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)


# The first match wins: a reserved type is refused (403) before other rejections (422).
_STATUSES: tuple[tuple[type[TaskqError] | tuple[type[TaskqError], ...], int], ...] = (
    (ReservedJobTypeError, 403),
    ((JobRejectedError, ContractError), 422),
    ((IdempotencyInFlightError, JobStateError), 409),
    (JobNotFoundError, 404),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (RateLimitedError, 429),
    ((AccessError, *UNAVAILABLE), 503),
)


def status_of(error: TaskqError) -> int:
    """Return the HTTP status that tells a client what to do about ``error``."""
    return next((status for kinds, status in _STATUSES if isinstance(error, kinds)), 500)


def refusal(
    error: TaskqError, *, retry_after: int = 5
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Return the status, body and headers refusing a credential, or saying a service is down."""
    detail = str(error)
    status = status_of(error)
    headers: dict[str, str] = {}
    if isinstance(error, AuthenticationError):
        challenge = 'Bearer realm="taskq"'
        if error.error != "invalid_request":
            # RFC 6750 error_description: printable ASCII without double quote or backslash.
            quoted = "".join(c for c in detail if " " <= c <= "~" and c not in '"\\')
            challenge += f', error="{error.error}", error_description="{quoted}"'
        headers["WWW-Authenticate"] = challenge
    elif isinstance(error, PermissionDeniedError):
        challenge = 'Bearer realm="taskq", error="insufficient_scope"'
        if error.scope is not None:
            challenge += f', scope="{error.scope}"'
        headers["WWW-Authenticate"] = challenge
    elif isinstance(error, RateLimitedError):
        headers["Retry-After"] = wait_header(error.retry_after)
    else:
        detail = f"{detail}; retry later"
        headers["Retry-After"] = str(retry_after)
    return status, problem_body(status, detail), headers


def error_item(error: TaskqError) -> dict[str, Any]:
    """Return the problem fields of a taskq error (used for batch items too)."""
    field = getattr(error, "field", None)
    item: dict[str, Any] = {"status": status_of(error), "detail": str(error)}
    if field:
        item["errors"] = [{"field": field, "message": str(error)}]
    return item


def error_response(error: TaskqError, *, retry_after: int = 5) -> JSONResponse:
    """Return the problem that tells a client what to do about ``error``."""
    status = status_of(error)
    if isinstance(error, AccessError) or status == 503:
        # 401 and 403 say how to authenticate (RFC 6750); a 503 says when to come back.
        status, body, headers = refusal(error, retry_after=retry_after)
        return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM)
    if status == 500:
        return problem(500, "internal error")
    item = error_item(error)
    return problem(status, item["detail"], errors=item.get("errors"))


def install(app: FastAPI, *, retry_after: int) -> None:
    """Register the handlers that turn every failure into a problem response."""

    @app.exception_handler(TaskqError)
    async def taskq_error(request: Request, exc: TaskqError) -> JSONResponse:
        response = error_response(exc, retry_after=retry_after)
        if response.status_code == 500:
            logger.exception("unexpected taskq error")
        elif response.status_code == 503 and not isinstance(exc, AccessError):
            logger.warning("{} {} -> 503: {}", request.method, request.url.path, exc)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_field_error(e) for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, detail or "invalid request", errors=errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.opt(exception=exc).error(
            "unhandled error on {} {}", request.method, request.url.path
        )
        return problem(500, "internal error")


def _field_error(error: Any) -> dict[str, Any]:
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "json_invalid":
        message = f"the body is not valid JSON: {error.get('ctx', {}).get('error', 'parse error')}"
    if error.get("type") == "extra_forbidden":
        message = "unknown field; see /openapi.json for the accepted fields"
    # Never echo the input back: it may be huge or hold secrets.
    return {"field": ".".join(loc) or "body", "message": message}
