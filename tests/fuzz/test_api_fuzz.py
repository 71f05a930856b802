"""Schemathesis over the whole OpenAPI document of ``taskctl serve``, a real process.

Every operation (jobs, batches, admin DLQ routes, the webhook receivers, health and metrics)
is generated from its schema and sent to the real stack (RabbitMQ, SQLite, local blobs):
with a valid key no request gets a 5xx or breaks the documented schema; without one, every
secured operation answers 401. A stateful run follows the links (submit a job, then read and
cancel it). Hypothesis keeps its health checks on, except the one for slow examples (each is
a round trip to a real server).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from taskctl.assembly import api_app
from tests.credentials import bearer
from tests.fuzz.conftest import Served
from topology import limits
from topology.settings import load_settings

pytestmark = pytest.mark.rabbitmq

CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


def _linked(document: dict[str, Any]) -> dict[str, Any]:
    """Return ``document`` with the links a stateful run follows: a submitted job's id."""
    linked = copy.deepcopy(document)
    job = {"job_id": "$response.body#/id"}
    linked["paths"]["/jobs"]["post"]["responses"]["202"]["links"] = {
        "GetJob": {
            "operationId": _operation_id(linked, "/jobs/{job_id}", "get"),
            "parameters": job,
        },
        "CancelJob": {
            "operationId": _operation_id(linked, "/jobs/{job_id}", "delete"),
            "parameters": job,
        },
    }
    return linked


def _operation_id(document: dict[str, Any], path: str, method: str) -> str:
    return str(document["paths"][path][method]["operationId"])


# The document of the app ``taskctl serve`` assembles (building it opens nothing); the calls
# go over HTTP to the real process, which serves the same document.
DOCUMENT = _linked(api_app(load_settings({})).openapi())
schema = schemathesis.openapi.from_dict(DOCUMENT)
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _secured(case: Any) -> bool:
    return bool(case.operation.definition.raw.get("security"))


def _too_long(response: Any) -> bool:
    """Return whether the server refused the URL as over its limit (before any route)."""
    if response.status_code != 414:
        return False
    assert len(response.request.url) > limits.MAX_REQUEST_LINE_BYTES
    return True


@schema.parametrize()
@FUZZ
def test_with_a_valid_key_nothing_breaks(case: Any, served: Served) -> None:
    response = case.call(base_url=served.base, headers=bearer(served.key))
    if not _too_long(response):
        case.validate_response(response, checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_without_a_key_every_secured_operation_is_401(case: Any, served: Served) -> None:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = headers
    response = case.call(base_url=served.base)
    if _too_long(response):
        return
    if _secured(case):
        assert response.status_code == 401, (case.method, case.path, response.text)
        assert response.headers["www-authenticate"][0].startswith("Bearer")
    case.validate_response(response, checks=CHECKS)


def test_stateful_runs_follow_submitted_jobs(served: Served) -> None:
    class Fuzz(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": served.base, "headers": bearer(served.key)}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS)

    run_state_machine_as_test(
        Fuzz,
        settings=settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
