"""Schemathesis over /openapi.json: no 5xx and no response that breaks the documented schema."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.producers.api_harness import make_api
from topology.compiled import compile_topology
from topology.loader import load_topology
from topology.settings import SubmitSettings

harness = make_api(compile_topology(load_topology()), submit=SubmitSettings(claim_check_bytes=1024))
schema = schemathesis.openapi.from_asgi("/openapi.json", harness.services_app)

CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_honours_its_schema_for_generated_requests(case):
    response = case.call(headers={"Authorization": f"Bearer {harness.token}"})
    case.validate_response(response, checks=CHECKS)
