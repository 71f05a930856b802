"""The OpenAPI document, with every error response described as what it is: problem+json."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from producers.api.problems import PROBLEM, TITLES
from producers.api.schemas import Problem

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# Which problems each kind of operation can answer (besides its success).
_ALWAYS = (422, 503)
_BY_METHOD = {"post": (409, 413, 415), "delete": (404, 409), "get": ()}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` document problem+json errors for every operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            _describe_problems(document)
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
            for code in [c for c in responses if c.isdigit() and int(c) >= 400]:
                del responses[code]
            for code in sorted(codes):
                responses[str(code)] = {
                    "description": TITLES.get(code, "Error"),
                    "content": {PROBLEM: {"schema": PROBLEM_REF}},
                }
