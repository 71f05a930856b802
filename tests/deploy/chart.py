"""Rendering and validating the Helm chart and the Kustomize base in tests."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import CI
from tests.keda_schemas import CRD_FOLDERS, validate_keda

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "taskq"
KUSTOMIZE = ROOT / "deploy" / "kustomize"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")


def require(module: str) -> ModuleType:
    """Import a tool of the dev extra; fail under CI=true when it is missing, else skip."""
    try:
        return importlib.import_module(module)
    except ImportError:
        message = (
            f"{module} is not installed (the dev extra: pip install -c constraints.txt -e '.[dev]')"
        )
        if CI:
            pytest.fail(message)
        pytest.skip(message)


@functools.cache
def build_base() -> ModuleType:
    """Return deploy/kustomize/build_base.py as a module: the one renderer of the chart."""
    require("helm_python")
    spec = importlib.util.spec_from_file_location("build_base", KUSTOMIZE / "build_base.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(values: dict[str, Any] | None = None, **release: str) -> list[dict[str, Any]]:
    """Return every manifest the chart renders for ``values``."""
    documents: list[dict[str, Any]] = build_base().render_chart(values, **release)
    return documents


def validate_manifest(document: dict[str, Any]) -> None:
    """Validate a manifest strictly: built-in kinds against Kubernetes' schemas, CRDs against ours."""
    if document["kind"] in CRD_FOLDERS:
        validate_keda(document)
        return
    kubernetes_validate = require("kubernetes_validate")
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(document, version, strict=True)


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Return the documents of ``kind`` by name."""
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


# A topology with two stream sources: one with its own scale, one with its own consumer group
# and two readers at least.
WITH_STREAMS = """\
groups:
  orders: {jobs: ["order.#"]}
  audits: {jobs: [audit.entry]}
streams:
  shop:
    stream: "shop:orders"
    job: "order.{event}"
    event_field: kind
    scale: {min: 1, max: 6, backlog_per_worker: 500, stabilization: 2m}
  audit:
    stream: audit
    group: readers
    job: audit.entry
    consumers: 2
"""


def streams_values() -> dict[str, Any]:
    """Return the chart's topology values of ``WITH_STREAMS``, as ``taskctl deploy render`` prints them."""
    from topology.compiled import compile_topology
    from topology.export import chart_values
    from topology.loader import parse_topology

    topology = compile_topology(parse_topology(WITH_STREAMS))
    return chart_values(topology, WITH_STREAMS, max_delay=86400.0, orphan_grace=86400.0)
