"""The OpenAPI document: problem+json errors, and the bearer scheme on every secured operation."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from producers.api.problems import PROBLEM, TITLES
from producers.api.schemas import Problem
from producers.api.security import SCHEME

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# Which problems each kind of operation can answer (besides its success).
_ALWAYS = (422, 503)
_BY_METHOD = {"post": (409, 413, 415), "delete": (404, 409), "get": ()}
_SECURED = (401, 403, 429)  # no or a bad credential, a missing scope, a used-up rate
_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "An API key (`tq_<id>_<secret>`, from `taskctl keys create` or the file "
        "`taskctl up` writes) or an OAuth2/OIDC access token (JWT)."
    ),
}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` document problem+json errors for every operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            _describe_problems(document)
            document["components"]["securitySchemes"] = {SCHEME: _BEARER}
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _describe_problems(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema()
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            codes = set(_ALWAYS) | set(_BY_METHOD.get(method, ()))
            if "{" in path:
                codes.add(404)
            if path in ("/healthz", "/metrics"):
                codes = set()
            if operation.get("security"):
                codes |= set(_SECURED)
            for code in [c for c in responses if c.isdigit() and int(c) >= 400]:
                del responses[code]
            for code in sorted(codes):
                responses[str(code)] = {
                    "description": TITLES.get(code, "Error"),
                    "content": {PROBLEM: {"schema": PROBLEM_REF}},
                }
