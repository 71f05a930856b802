import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart import ROOT, require

TERRAFORM = ROOT / "deploy" / "terraform"
CLOUDS = ("aws", "gcp", "azure")
MODULES = (*CLOUDS, "modules/rabbitmq", "modules/chart-secrets")
# What docs/deploy.md promises every cloud module outputs, for the chart to take.
DOCUMENTED_OUTPUTS = {
    "blob_url",
    "broker_host",
    "store_host",
    "kubernetes_secrets",
    "service_account_annotations",
    "pod_labels",
    "helm_values",
}
BLOB_SCHEMES = {"aws": "s3://", "gcp": "gs://", "azure": "azblob://"}


def name(key: str) -> str:
    return key.strip('"')


def load(path: Path) -> dict[str, Any]:
    hcl2 = require("hcl2")
    with path.open(encoding="utf-8") as file:
        parsed: dict[str, Any] = hcl2.load(file)
    return parsed


def blocks(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for block in load(path).get(kind, []):
            found.update({name(k): v for k, v in block.items()})
    return found


def test_every_terraform_file_parses():
    files = sorted(TERRAFORM.rglob("*.tf"))
    assert len(files) >= 25
    for path in files:
        assert load(path), path


def test_a_broken_file_fails_to_parse(tmp_path):
    hcl2 = require("hcl2")
    broken = tmp_path / "main.tf"
    broken.write_text('resource "aws_s3_bucket" "x" {\n  bucket = \n', encoding="utf-8")
    with pytest.raises(Exception, match="Unexpected"), broken.open() as file:
        hcl2.load(file)


@pytest.mark.parametrize("module", MODULES)
def test_every_variable_has_a_description_and_a_type(module):
    variables = blocks(TERRAFORM / module, "variable")
    assert variables
    for variable, spec in variables.items():
        assert spec.get("description", "").strip('"'), (
            f"{module}: variable {variable} has no description"
        )
        assert spec.get("type"), f"{module}: variable {variable} has no type"


@pytest.mark.parametrize("cloud", CLOUDS)
def test_each_cloud_module_declares_the_documented_outputs(cloud):
    outputs = blocks(TERRAFORM / cloud, "output")
    assert set(outputs) == DOCUMENTED_OUTPUTS
    for output, spec in outputs.items():
        assert spec.get("description", "").strip('"'), (
            f"{cloud}: output {output} has no description"
        )
    assert BLOB_SCHEMES[cloud] in outputs["blob_url"]["value"]
    # The chart's values: the module's own keys merged into the Secrets module's.
    values = outputs["helm_values"]["value"]
    assert values.startswith("${merge(module.chart_secrets.chart_values, {")
    assert set(re.findall(r"(\w+)\s*=\s*\{", values)) >= {"blob", "serviceAccount"}
    assert "module.chart_secrets.names" in outputs["kubernetes_secrets"]["value"]


def test_the_secrets_module_names_what_the_chart_requires():
    outputs = blocks(TERRAFORM / "modules" / "chart-secrets", "output")
    values = outputs["chart_values"]["value"]
    chart = json.loads((ROOT / "deploy" / "helm" / "taskq" / "values.schema.json").read_text())
    required = set(chart["properties"]["secretEnv"]["required"])
    assert required <= set(values["secretEnv"])
    assert set(values["secretEnv"]) == {"TASKQ_AMQP_URL", "TASKQ_MANAGEMENT_URL", "TASKQ_STORE_URL"}


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_example_uses_only_declared_variables_and_outputs(cloud):
    variables = blocks(TERRAFORM / cloud, "variable")
    outputs = blocks(TERRAFORM / cloud, "output")
    example = TERRAFORM / cloud / "examples" / "basic"
    modules = blocks(example, "module")
    assert list(modules) == ["taskq"]
    call = modules["taskq"]
    assert call["source"] == '"../.."'
    arguments = set(call) - {"source", "__is_block__", "__comments__"}
    assert arguments <= set(variables), arguments - set(variables)
    required = {v for v, spec in variables.items() if "default" not in spec}
    assert required <= arguments, f"{cloud}: the example leaves out {required - arguments}"
    text = "\n".join(p.read_text(encoding="utf-8") for p in example.glob("*.tf"))
    used = set(re.findall(r"module\.taskq\.(\w+)", text))
    assert used, example
    assert used <= set(outputs), used - set(outputs)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_every_var_reference_is_declared(cloud):
    for directory in (TERRAFORM / cloud, *(TERRAFORM / "modules").iterdir()):
        declared = set(blocks(directory, "variable"))
        text = "\n".join(p.read_text(encoding="utf-8") for p in directory.glob("*.tf"))
        used = set(re.findall(r"\bvar\.(\w+)", text))
        assert used <= declared, f"{directory}: undeclared {used - declared}"


@pytest.mark.parametrize("cloud", CLOUDS)
def test_the_bucket_expires_payloads_after_blob_retention_days(cloud):
    text = (TERRAFORM / cloud / "bucket.tf").read_text(encoding="utf-8")
    assert "var.blob_retention_days" in text
    lifecycle = {
        "aws": "expiration",
        "gcp": '"Delete"',
        "azure": "delete_after_days_since_creation_greater_than",
    }
    assert lifecycle[cloud] in text
