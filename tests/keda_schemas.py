"""Validation of custom resources against the JSON Schemas in deploy/ that mirror their CRDs.

KEDA's ScaledObject and TriggerAuthentication (deploy/keda/), and the Prometheus operator's
ServiceMonitor and PrometheusRule (deploy/prometheus-operator/).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SCHEMAS = DEPLOY / "keda"
CRD_FOLDERS = {
    "ScaledObject": SCHEMAS,
    "TriggerAuthentication": SCHEMAS,
    "ServiceMonitor": DEPLOY / "prometheus-operator",
    "PrometheusRule": DEPLOY / "prometheus-operator",
}


@functools.cache
def validator(kind: str) -> jsonschema.Draft202012Validator:
    """Return the validator for a custom kind (``ScaledObject``, ``ServiceMonitor``, ...)."""
    path = CRD_FOLDERS[kind] / f"{kind.lower()}.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_keda(document: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` fits the schema of its kind."""
    validator(document["kind"]).validate(document)
