"""Validation of KEDA manifests against deploy/keda/*.schema.json, which mirror KEDA's CRD schemas."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[1] / "deploy" / "keda"


@functools.cache
def validator(kind: str) -> jsonschema.Draft202012Validator:
    """Return the validator for a KEDA kind (``ScaledObject``, ``TriggerAuthentication``)."""
    schema = json.loads((SCHEMAS / f"{kind.lower()}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_keda(document: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` fits the schema of its kind."""
    validator(document["kind"]).validate(document)
