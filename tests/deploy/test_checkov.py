import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CI
from tests.deploy.chart import ROOT, render, streams_values

CONFIG = ROOT / "deploy" / "checkov.yaml"
# Rendered like a production install: the KEDA profile turns every optional kind on.
PROFILES = {
    "autoscaler": {"api": {"ingress": {"enabled": True}}},
    "keda": {
        "scaling": {"mode": "keda"},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "dashboards": {"enabled": True},
    },
    # Stream readers, and the autoscaler scaling them.
    "streams": {**streams_values(), "scaling": {"mode": "autoscaler"}},
}


@pytest.fixture(scope="module")
def checkov() -> str:
    """Return checkov in its own venv; fail under CI=true when it is missing, else skip."""
    path = Path(os.environ.get("TASKQ_TEST_CHECKOV") or ROOT / ".venv-checkov" / "bin" / "checkov")
    if not path.is_file():
        message = f"checkov is not installed at {path}"
        if CI:
            pytest.fail(f"{message}; CI must install it (ensure_checkov in deploy/local/env.sh)")
        pytest.skip(f"{message}: source deploy/local/env.sh && ensure_checkov")
    return str(path)


def scan(checkov: str, directory: Path, framework: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            checkov,
            "--config-file",
            str(CONFIG),
            "-d",
            str(directory),
            "--framework",
            framework,
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def failures(process: subprocess.Popen[str]) -> tuple[dict[str, Any], list[str]]:
    stdout, stderr = process.communicate(timeout=120)
    assert stdout.strip(), stderr
    reports = json.loads(stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for report in reports
        for check in report["results"]["failed_checks"]
    ]
    return reports[0]["summary"], failed


def test_no_check_fails_on_the_chart_the_base_or_the_terraform_modules(checkov, tmp_path):
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    for name, values in PROFILES.items():
        (rendered / f"{name}.yaml").write_text(yaml.safe_dump_all(render(values)), encoding="utf-8")
    # The three scans run at once: each is a few seconds of one core.
    scans = {
        "chart": scan(checkov, rendered, "kubernetes"),
        "kustomize": scan(checkov, ROOT / "deploy" / "kustomize" / "base", "kubernetes"),
        "terraform": scan(checkov, ROOT / "deploy" / "terraform", "terraform"),
    }
    for name, process in scans.items():
        summary, failed = failures(process)
        assert not failed, f"{name}: " + "\n".join(failed)
        assert summary["passed"] > 0, (name, summary)
        assert summary["parsing_errors"] == 0, (name, summary)
